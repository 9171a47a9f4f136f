/* a_probe: odd-but-legal ways a program addresses a tailnet destination (the adversarial
 * tier). Built twice: dynamic (under LD_PRELOAD) and -static (only the supervisor sees it).
 * Each mode does one thing and prints key=value lines; errno=0 means the call succeeded.
 *
 *   a_probe tcp24 IP6 PORT     TCP connect, sockaddr_in6 with addrlen 24 (RFC 2133 size);
 *                              on success sends an HTTP GET and prints reply=<first line>
 *   a_probe udp24 IP6 PORT     UDP sendto, sockaddr_in6 with addrlen 24
 *   a_probe tfo24 IP6 PORT     TCP Fast Open: sendto(MSG_FASTOPEN) of an HTTP GET, addrlen 24;
 *                              on success prints reply=<first line>
 *   a_probe udp0 IP PORT       UDP sendto on an AF_INET socket, sin_family 0 (never set)
 *   a_probe udpmsg0 IP PORT    the same with sendmsg
 *   a_probe raw0 IP            raw ICMP echo request (AF_INET, SOCK_RAW), sin_family 0
 *   a_probe raw6_0 IP6         raw ICMPv6 echo request (AF_INET6, SOCK_RAW), sin6_family 0
 *   a_probe mmsg IP PORT       UDP sendmmsg: one datagram, to IP:PORT
 *   a_probe mmsg2 IP PORT      UDP sendmmsg: one to 127.0.0.1:9, then one to IP:PORT
 *   a_probe smmsg|smmsg2 IP PORT   the same through syscall(SYS_sendmmsg) (musl's sendmmsg
 *                              is a loop of sendmsg on 64-bit: the supervisor would never
 *                              see a sendmmsg)
 *   a_probe int80 IP PORT      TCP connect through int 0x80 (the i386 ABI, socketcall-free nr 362)
 *   a_probe nodump MODE ...    prctl(PR_SET_DUMPABLE, 0) first, then MODE as above: a
 *                              process an unprivileged supervisor may not read
 *   a_probe numeric PORT HOST...   listen on 127.0.0.1:PORT (0: any), then for each HOST:
 *                              getaddrinfo + connect + accept; prints HOST=direct when the
 *                              accepted peer is this socket itself, HOST=proxied when it is
 *                              somebody else (a proxy dialled for us), or HOST=<error>
 */
#include "h_common.h"
#include <netinet/icmp6.h>
#include <netinet/in.h>
#include <netinet/ip_icmp.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

static void v4(struct sockaddr_in *a, const char *ip, int port) {
    memset(a, 0, sizeof *a);
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    if (inet_pton(AF_INET, ip, &a->sin_addr) != 1) { printf("bad=%s\n", ip); exit(2); }
}

static void v6(struct sockaddr_in6 *a, const char *ip, int port) {
    memset(a, 0, sizeof *a);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(port);
    if (inet_pton(AF_INET6, ip, &a->sin6_addr) != 1) { printf("bad=%s\n", ip); exit(2); }
}

static int numeric(int argc, char **argv) {
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in la;
    v4(&la, "127.0.0.1", atoi(argv[2]));
    int one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(l, (struct sockaddr *)&la, sizeof la) || listen(l, 16)) { printf("listen=%s\n", h_en(errno)); return 1; }
    socklen_t ll = sizeof la;
    getsockname(l, (struct sockaddr *)&la, &ll);
    char port[16];
    snprintf(port, sizeof port, "%d", ntohs(la.sin_port));
    for (int i = 3; i < argc; i++) {
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_family = AF_INET}, *res;
        int r = getaddrinfo(argv[i], port, &hints, &res);
        if (r) { printf("%s=gai:%s\n", argv[i], gai_strerror(r)); continue; }
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(fd, res->ai_addr, res->ai_addrlen)) { printf("%s=connect:%s\n", argv[i], h_en(errno)); freeaddrinfo(res); close(fd); continue; }
        freeaddrinfo(res);
        struct pollfd p = {l, POLLIN, 0};
        if (poll(&p, 1, 3000) != 1) { printf("%s=noaccept\n", argv[i]); close(fd); continue; }
        struct sockaddr_in peer, me;
        socklen_t pl = sizeof peer, ml = sizeof me;
        int c = accept(l, (struct sockaddr *)&peer, &pl);
        getsockname(fd, (struct sockaddr *)&me, &ml);
        int direct = c >= 0 && peer.sin_port == me.sin_port && peer.sin_addr.s_addr == me.sin_addr.s_addr;
        printf("%s=%s\n", argv[i], direct ? "direct" : "proxied");
        if (c >= 0) close(c);
        close(fd);
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "nodump")) {
        if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) { printf("nodump=%s\n", h_en(errno)); return 2; }
        argv++;
        argc--;
    }
    if (argc < 3) return 2;
    const char *cmd = argv[1];
    if (!strcmp(cmd, "numeric")) return numeric(argc, argv);
    const char *ip = argv[2];
    int port = argc > 3 ? atoi(argv[3]) : 0;
    int r = -1, e = 0;
    if (!strcmp(cmd, "tcp24") || !strcmp(cmd, "udp24") || !strcmp(cmd, "tfo24")) {
        struct sockaddr_in6 a;
        v6(&a, ip, port);
        int tcp = strcmp(cmd, "udp24") != 0;
        int fd = socket(AF_INET6, tcp ? SOCK_STREAM : SOCK_DGRAM, 0);
        if (!strcmp(cmd, "tcp24")) {
            r = connect(fd, (struct sockaddr *)&a, 24);
            e = errno;
            if (r == 0 && send(fd, H_GET, strlen(H_GET), 0) < 0) e = errno;
        } else if (!strcmp(cmd, "tfo24")) {
            r = sendto(fd, H_GET, strlen(H_GET), MSG_FASTOPEN, (struct sockaddr *)&a, 24) < 0 ? -1 : 0;
            e = errno;
        } else {
            r = sendto(fd, "hello", 5, 0, (struct sockaddr *)&a, 24) < 0 ? -1 : 0;
            e = errno;
        }
        printf("errno=%s\n", r < 0 ? h_en(e) : "0");
        if (r == 0 && tcp) h_reply(fd, "reply");
        return 0;
    }
    if (!strcmp(cmd, "udp0") || !strcmp(cmd, "udpmsg0")) {
        struct sockaddr_in a;
        v4(&a, ip, port);
        a.sin_family = 0;
        int fd = socket(AF_INET, SOCK_DGRAM, 0);
        if (!strcmp(cmd, "udp0")) {
            r = sendto(fd, "hello", 5, 0, (struct sockaddr *)&a, sizeof a) < 0 ? -1 : 0;
        } else {
            struct iovec iov = {"hello", 5};
            struct msghdr m = {0};
            m.msg_name = &a; m.msg_namelen = sizeof a; m.msg_iov = &iov; m.msg_iovlen = 1;
            r = sendmsg(fd, &m, 0) < 0 ? -1 : 0;
        }
        e = errno;
    } else if (!strcmp(cmd, "raw0")) {
        struct sockaddr_in a;
        v4(&a, ip, 0);
        a.sin_family = 0;
        int fd = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
        if (fd < 0) { printf("errno=socket:%s\n", h_en(errno)); return 0; }
        struct icmphdr h = {0};
        h.type = ICMP_ECHO;
        h.un.echo.id = htons(4242);
        h.un.echo.sequence = htons(1);
        /* RFC 1071 checksum of the 8-byte header (no payload). */
        unsigned short *w = (unsigned short *)&h;
        unsigned sum = 0;
        for (int i = 0; i < 4; i++) sum += w[i];
        sum = (sum >> 16) + (sum & 0xffff);
        sum += sum >> 16;
        h.checksum = ~sum;
        r = sendto(fd, &h, sizeof h, 0, (struct sockaddr *)&a, sizeof a) < 0 ? -1 : 0;
        e = errno;
    } else if (!strcmp(cmd, "raw6_0")) {
        struct sockaddr_in6 a;
        v6(&a, ip, 0);
        a.sin6_family = 0;
        int fd = socket(AF_INET6, SOCK_RAW, IPPROTO_ICMPV6);
        if (fd < 0) { printf("errno=socket:%s\n", h_en(errno)); return 0; }
        struct icmp6_hdr h = {0};
        h.icmp6_type = ICMP6_ECHO_REQUEST; /* the kernel fills in the ICMPv6 checksum */
        h.icmp6_id = htons(4242);
        h.icmp6_seq = htons(1);
        r = sendto(fd, &h, sizeof h, 0, (struct sockaddr *)&a, sizeof a) < 0 ? -1 : 0;
        e = errno;
    } else if (!strcmp(cmd, "mmsg") || !strcmp(cmd, "mmsg2") || !strcmp(cmd, "smmsg") || !strcmp(cmd, "smmsg2")) {
        int raw = cmd[0] == 's';
        struct sockaddr_in a, local;
        v4(&a, ip, port);
        v4(&local, "127.0.0.1", 9);
        int fd = socket(AF_INET, SOCK_DGRAM, 0);
        struct iovec iov = {"hello", 5};
        struct mmsghdr mm[2];
        memset(mm, 0, sizeof mm);
        int n = 0;
        if (cmd[strlen(cmd) - 1] == '2') {
            mm[n].msg_hdr.msg_name = &local; mm[n].msg_hdr.msg_namelen = sizeof local;
            mm[n].msg_hdr.msg_iov = &iov; mm[n].msg_hdr.msg_iovlen = 1;
            n++;
        }
        mm[n].msg_hdr.msg_name = &a; mm[n].msg_hdr.msg_namelen = sizeof a;
        mm[n].msg_hdr.msg_iov = &iov; mm[n].msg_hdr.msg_iovlen = 1;
        n++;
        int sent = raw ? (int)syscall(SYS_sendmmsg, fd, mm, n, 0) : sendmmsg(fd, mm, n, 0);
        e = errno;
        printf("sent=%d\n", sent);
        r = sent == n ? 0 : -1;
        if (sent >= 0 && sent < n) e = 0;
    } else if (!strcmp(cmd, "int80")) {
        struct sockaddr_in a;
        v4(&a, ip, port);
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        /* int 0x80 takes 32-bit pointers: put the address below 4 GiB. */
        void *low = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_32BIT, -1, 0);
        if (low == MAP_FAILED) { printf("errno=mmap\n"); return 1; }
        memcpy(low, &a, sizeof a);
        long ret;
        __asm__ volatile("int $0x80" : "=a"(ret) : "a"(362L), "b"((long)fd), "c"((long)(unsigned long)low), "d"((long)sizeof a) : "memory");
        r = ret < 0 ? -1 : 0;
        e = ret < 0 ? (int)-ret : 0;
    } else {
        return 2;
    }
    printf("errno=%s\n", r < 0 ? h_en(e) : "0");
    return 0;
}
