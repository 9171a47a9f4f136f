/* udp_calls: the datagram call patterns of dig, libuv and node against a UDP echo peer,
 * printed as key=value lines (tests/udp.rs judges them).
 *   udp_calls IP PORT
 * mmsg=3 mmsg_ok=1         sendmmsg of 3 datagrams (unconnected, msg_name set), recvmmsg of
 *                          them, each from IP:PORT with its payload
 * peek=100 peek_trunc=1    recvmsg(MSG_PEEK|MSG_TRUNC) into 10 bytes: the real length, MSG_TRUNC
 * read=100 read_ok=1       then the same datagram whole
 * cmsg=1                   SO_TIMESTAMP's control message passed through recvmsg
 * stranger=127.0.0.1       a datagram from a local socket is reported as its own, not the peer's
 * big=EMSGSIZE             9000 bytes: larger than the proxy takes
 * conn_rw=1 peer=IP:PORT   connect + write/read; getpeername
 * conn_stranger_dropped=1  connected: a local sender's datagram never shows
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static struct sockaddr_storage dst;
static socklen_t dlen;
static int fam;

static const char *addr_str(struct sockaddr_storage *ss, char *buf, size_t n) {
    char ip[64];
    int port;
    if (ss->ss_family == AF_INET) {
        struct sockaddr_in *a = (void *)ss;
        inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
        port = ntohs(a->sin_port);
    } else {
        struct sockaddr_in6 *a = (void *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip);
        port = ntohs(a->sin6_port);
    }
    snprintf(buf, n, "%s:%d", ip, port);
    return buf;
}

static int same_as_dst(struct sockaddr_storage *ss, socklen_t l) {
    return l == dlen && memcmp(ss, &dst, dlen) == 0;
}

static int wait_in(int fd, int ms) {
    struct pollfd p = {fd, POLLIN, 0};
    return poll(&p, 1, ms);
}

int main(int argc, char **argv) {
    if (argc != 3) return 1;
    struct sockaddr_in *s4 = (void *)&dst;
    struct sockaddr_in6 *s6 = (void *)&dst;
    if (inet_pton(AF_INET, argv[1], &s4->sin_addr) == 1) { fam = AF_INET; s4->sin_family = AF_INET; s4->sin_port = htons(atoi(argv[2])); dlen = sizeof *s4; }
    else if (inet_pton(AF_INET6, argv[1], &s6->sin6_addr) == 1) { fam = AF_INET6; s6->sin6_family = AF_INET6; s6->sin6_port = htons(atoi(argv[2])); dlen = sizeof *s6; }
    else return 1;
    char sbuf[96];

    int fd = socket(fam, SOCK_DGRAM, 0);
    /* sendmmsg: three datagrams, each naming the peer. */
    char p[3][16];
    struct iovec iv[3];
    struct mmsghdr mm[3];
    memset(mm, 0, sizeof mm);
    for (int i = 0; i < 3; i++) {
        snprintf(p[i], sizeof p[i], "mmsg-%d", i);
        iv[i].iov_base = p[i];
        iv[i].iov_len = strlen(p[i]);
        mm[i].msg_hdr.msg_name = &dst;
        mm[i].msg_hdr.msg_namelen = dlen;
        mm[i].msg_hdr.msg_iov = &iv[i];
        mm[i].msg_hdr.msg_iovlen = 1;
    }
    int sent = sendmmsg(fd, mm, 3, 0);
    printf("mmsg=%d\n", sent < 0 ? -errno : sent);
    if (sent != 3) { printf("mmsg_err=%s\n", strerror(errno)); return 0; }
    /* recvmmsg until all three are back (they may arrive one by one). */
    char r[3][64];
    struct iovec rv[3];
    struct sockaddr_storage from[3];
    int got = 0, ok = 1;
    for (int tries = 0; got < 3 && tries < 50; tries++) {
        if (wait_in(fd, 3000) <= 0) break;
        struct mmsghdr rm[3];
        memset(rm, 0, sizeof rm);
        for (int i = 0; i < 3 - got; i++) {
            rv[i].iov_base = r[got + i];
            rv[i].iov_len = sizeof r[0];
            rm[i].msg_hdr.msg_name = &from[got + i];
            rm[i].msg_hdr.msg_namelen = sizeof from[0];
            rm[i].msg_hdr.msg_iov = &rv[i];
            rm[i].msg_hdr.msg_iovlen = 1;
        }
        int k = recvmmsg(fd, rm, 3 - got, MSG_DONTWAIT, NULL);
        if (k <= 0) continue;
        for (int i = 0; i < k; i++) {
            int j = got + i;
            if (!same_as_dst(&from[j], rm[i].msg_hdr.msg_namelen)) { ok = 0; printf("mmsg_from=%s\n", addr_str(&from[j], sbuf, sizeof sbuf)); }
            if (rm[i].msg_len < 6 || memcmp(r[j], "mmsg-", 5) != 0) ok = 0;
        }
        got += k;
    }
    printf("mmsg_back=%d\nmmsg_ok=%d\n", got, ok && got == 3);

    /* MSG_PEEK | MSG_TRUNC into a small buffer, then the datagram whole. */
    char hundred[100];
    for (int i = 0; i < 100; i++) hundred[i] = 'a' + i % 26;
    sendto(fd, hundred, 100, 0, (struct sockaddr *)&dst, dlen);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_TIMESTAMP, &one, sizeof one);
    wait_in(fd, 3000);
    char small[10];
    struct iovec sv = {small, sizeof small};
    struct msghdr mh = {0};
    mh.msg_iov = &sv;
    mh.msg_iovlen = 1;
    ssize_t k = recvmsg(fd, &mh, MSG_PEEK | MSG_TRUNC);
    printf("peek=%zd\npeek_trunc=%d\npeek_bytes_ok=%d\n", k, !!(mh.msg_flags & MSG_TRUNC), k > 0 && memcmp(small, hundred, 10) == 0);
    char whole[200];
    char cbuf[256];
    struct iovec wv = {whole, sizeof whole};
    struct sockaddr_storage wf;
    memset(&mh, 0, sizeof mh);
    mh.msg_name = &wf;
    mh.msg_namelen = sizeof wf;
    mh.msg_iov = &wv;
    mh.msg_iovlen = 1;
    mh.msg_control = cbuf;
    mh.msg_controllen = sizeof cbuf;
    k = recvmsg(fd, &mh, 0);
    printf("read=%zd\nread_ok=%d\nread_from_ok=%d\n", k, k == 100 && memcmp(whole, hundred, 100) == 0, same_as_dst(&wf, mh.msg_namelen));
    int cm = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMP) cm = 1;
    printf("cmsg=%d\n", cm);

    /* A stranger on this machine: shown as itself. */
    struct sockaddr_storage me;
    socklen_t ml = sizeof me;
    getsockname(fd, (struct sockaddr *)&me, &ml);
    int st = socket(fam, SOCK_DGRAM, 0);
    struct sockaddr_storage lo = me;
    if (fam == AF_INET) inet_pton(AF_INET, "127.0.0.1", &((struct sockaddr_in *)&lo)->sin_addr);
    else inet_pton(AF_INET6, "::1", &((struct sockaddr_in6 *)&lo)->sin6_addr);
    sendto(st, "stranger", 8, 0, (struct sockaddr *)&lo, ml);
    wait_in(fd, 3000);
    struct sockaddr_storage sf;
    socklen_t sfl = sizeof sf;
    k = recvfrom(fd, whole, sizeof whole, 0, (struct sockaddr *)&sf, &sfl);
    char ip[64];
    if (sf.ss_family == AF_INET) inet_ntop(AF_INET, &((struct sockaddr_in *)&sf)->sin_addr, ip, sizeof ip);
    else inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&sf)->sin6_addr, ip, sizeof ip);
    printf("stranger=%s\nstranger_bytes=%zd\n", ip, k);

    /* Too large for the proxy. */
    static char big[9000];
    k = sendto(fd, big, sizeof big, 0, (struct sockaddr *)&dst, dlen);
    printf("big=%s\n", k < 0 && errno == EMSGSIZE ? "EMSGSIZE" : "sent");

    /* Connected: write/read, getpeername, a stranger's datagram dropped. */
    int c = socket(fam, SOCK_DGRAM, 0);
    if (connect(c, (struct sockaddr *)&dst, dlen) != 0) { printf("connect=%s\n", strerror(errno)); return 0; }
    struct sockaddr_storage pn;
    socklen_t pl = sizeof pn;
    getpeername(c, (struct sockaddr *)&pn, &pl);
    printf("peer=%s\npeer_ok=%d\n", addr_str(&pn, sbuf, sizeof sbuf), same_as_dst(&pn, pl));
    ml = sizeof me;
    getsockname(c, (struct sockaddr *)&me, &ml);
    lo = me;
    if (fam == AF_INET) inet_pton(AF_INET, "127.0.0.1", &((struct sockaddr_in *)&lo)->sin_addr);
    else inet_pton(AF_INET6, "::1", &((struct sockaddr_in6 *)&lo)->sin6_addr);
    sendto(st, "stranger", 8, 0, (struct sockaddr *)&lo, ml);
    write(c, "conn-write", 10);
    int crw = 0, strangers = 0;
    for (int i = 0; i < 3; i++) {
        if (wait_in(c, i == 0 ? 3000 : 200) <= 0) break;
        k = read(c, whole, sizeof whole);
        if (k == 10 && memcmp(whole, "conn-write", 10) == 0) crw = 1;
        else if (k > 0) strangers++;
    }
    printf("conn_rw=%d\nconn_stranger_dropped=%d\n", crw, strangers == 0);
    return 0;
}
