/* dns_ask: one DNS question asked the way a program with its own DNS client asks it, and
 * what came back. Built dynamically (for the library) and with musl-gcc -static (for the
 * supervisor).
 *
 *   dns_ask udp|cudp|tcp A|AAAA NAME IP PORT
 *     udp   an unconnected socket: sendto(IP:PORT), recvfrom (as musl and dnspython do); the
 *           reply's source address is printed as from=IP:PORT (a stub resolver drops a reply
 *           from any other address than the one it asked)
 *     cudp  connect(IP:PORT), send, recv (as c-ares, libuv and dig do)
 *     tcp   connect(IP:PORT), the two-octet length, the query; read the reply (RFC 7766)
 *   Prints key=value lines: errno (of the send, 0 on success), rcode, an=ADDRESS per A/AAAA
 *   answer, from= (udp), id_ok (the reply's ID is the query's). Waits at most 4 s for a reply
 *   (rcode=none). Exit 0 when a reply came.
 */
#include "h_common.h"

static int put_name(unsigned char *p, const char *name) {
    int n = 0;
    while (*name) {
        const char *dot = strchr(name, '.');
        int l = dot ? (int)(dot - name) : (int)strlen(name);
        if (l == 0 || l > 63) return -1;
        p[n++] = (unsigned char)l;
        memcpy(p + n, name, l);
        n += l;
        name += l + (dot ? 1 : 0);
    }
    p[n++] = 0;
    return n;
}

/* Offset just past the (possibly compressed) name at p[i], or -1. */
static int skip_name(const unsigned char *p, int len, int i) {
    for (int hops = 0; hops < 128 && i < len; hops++) {
        if (p[i] == 0) return i + 1;
        if ((p[i] & 0xc0) == 0xc0) return i + 2 <= len ? i + 2 : -1;
        i += 1 + p[i];
    }
    return -1;
}

static void print_reply(const unsigned char *r, int len, unsigned id) {
    if (len < 12) { printf("rcode=short\n"); return; }
    printf("id_ok=%d\nrcode=%d\n", ((r[0] << 8) | r[1]) == (int)id, r[3] & 0x0f);
    int qd = (r[4] << 8) | r[5], an = (r[6] << 8) | r[7], i = 12;
    for (int q = 0; q < qd && i >= 0; q++) {
        i = skip_name(r, len, i);
        if (i >= 0) i += 4;
    }
    for (int a = 0; a < an && i >= 0 && i < len; a++) {
        i = skip_name(r, len, i);
        if (i < 0 || i + 10 > len) break;
        int type = (r[i] << 8) | r[i + 1], rdlen = (r[i + 8] << 8) | r[i + 9];
        i += 10;
        if (i + rdlen > len) break;
        char s[INET6_ADDRSTRLEN];
        if (type == 1 && rdlen == 4 && inet_ntop(AF_INET, r + i, s, sizeof s)) printf("an=%s\n", s);
        if (type == 28 && rdlen == 16 && inet_ntop(AF_INET6, r + i, s, sizeof s)) printf("an=%s\n", s);
        i += rdlen;
    }
}

static int wait_in(int fd) {
    struct pollfd pf = { fd, POLLIN, 0 };
    return poll(&pf, 1, 4000) == 1;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: dns_ask udp|cudp|tcp A|AAAA NAME IP PORT\n");
        return 2;
    }
    const char *mode = argv[1];
    unsigned id = 0x5a00 | (getpid() & 0xff);
    unsigned char q[600] = { id >> 8, id & 0xff, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0 };
    int n = put_name(q + 12, argv[3]);
    if (n < 0) { printf("errno=EINVAL\n"); return 2; }
    n += 12;
    int qtype = !strcmp(argv[2], "AAAA") ? 28 : 1;
    q[n++] = 0; q[n++] = qtype; q[n++] = 0; q[n++] = 1;

    struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[5])) };
    if (inet_pton(AF_INET, argv[4], &to.sin_addr) != 1) { printf("errno=EINVAL\n"); return 2; }
    int tcp = !strcmp(mode, "tcp");
    int fd = socket(AF_INET, tcp ? SOCK_STREAM : SOCK_DGRAM, 0);
    if (fd < 0) { printf("errno=%s\n", h_en(errno)); return 1; }
    unsigned char r[4096];
    long got = -1;
    if (!strcmp(mode, "udp")) {
        if (sendto(fd, q, n, 0, (struct sockaddr *)&to, sizeof to) < 0) { printf("errno=%s\n", h_en(errno)); return 1; }
        printf("errno=0\n");
        struct sockaddr_in from;
        socklen_t fl = sizeof from;
        if (wait_in(fd)) got = recvfrom(fd, r, sizeof r, 0, (struct sockaddr *)&from, &fl);
        if (got >= 0) {
            char s[INET_ADDRSTRLEN] = "?";
            inet_ntop(AF_INET, &from.sin_addr, s, sizeof s);
            printf("from=%s:%d\n", s, ntohs(from.sin_port));
        }
    } else {
        if (connect(fd, (struct sockaddr *)&to, sizeof to) < 0) { printf("errno=%s\n", h_en(errno)); return 1; }
        unsigned char buf[602] = { n >> 8, n & 0xff };
        memcpy(buf + 2, q, n);
        long sent = tcp ? send(fd, buf, n + 2, MSG_NOSIGNAL) : send(fd, q, n, 0);
        if (sent < 0) { printf("errno=%s\n", h_en(errno)); return 1; }
        printf("errno=0\n");
        if (!tcp) {
            if (wait_in(fd)) got = recv(fd, r, sizeof r, 0);
        } else {
            long have = 0, want = -1;
            while (wait_in(fd)) {
                long k = recv(fd, r + have, sizeof r - have, 0);
                if (k <= 0) break;
                have += k;
                if (want < 0 && have >= 2) want = (r[0] << 8 | r[1]) + 2;
                if (want >= 0 && have >= want) break;
            }
            if (want >= 0 && have >= want) {
                memmove(r, r + 2, want - 2);
                got = want - 2;
            }
        }
    }
    if (got < 0) { printf("rcode=none\n"); return 1; }
    print_reply(r, (int)got, id);
    return 0;
}
