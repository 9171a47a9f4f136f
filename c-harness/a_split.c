/* a_split: sends a per-call check cannot judge whole (tests/adversarial.rs, items 17-18): a DNS
 * question split across calls or segments, TCP Fast Open to port 53, source routing. One mode per run,
 * key=value lines out; errno=0 means the call succeeded.
 *
 *   a_split lsrr_udp HOP DEST PORT   UDP sendto DEST:PORT with IP_OPTIONS loose source
 *                                       route via HOP (first hop = IP destination)
 *   a_split lsrr_tcp HOP DEST PORT   TCP connect DEST:PORT with the same IP_OPTIONS
 *   a_split retopts HOP DEST PORT    UDP sendmsg DEST:PORT with an IP_RETOPTS cmsg (LSRR via HOP)
 *   a_split srh_udp HOP6 DEST6 PORT  UDP sendto DEST6:PORT with IPV6_RTHDR: a segment
 *                                       routing header whose next segment is HOP6
 *   a_split srh_tcp HOP6 DEST6 PORT  TCP connect DEST6:PORT with the same IPV6_RTHDR
 *   a_split tfo_dns SERVER NAME      TCP Fast Open: sendto(MSG_FASTOPEN) of a DNS-over-TCP
 *                                       A query for NAME to SERVER:53
 *   a_split cork_dns SERVER NAME     UDP: sendto(SERVER:53) of the 12-byte DNS header with
 *                                       MSG_MORE, then sendto(SERVER:53) of the question
 *   a_split cork_dns2 SERVER NAME    UDP: sendto(SERVER:53, "", MSG_MORE), then send() of the
 *                                       whole query (no address)
 *   a_split udpcork_dns SERVER NAME  UDP_CORK on, sendto header, sendto question, UDP_CORK off
 *   a_split srh_cmsg HOP6 DEST6 PORT UDP sendmsg DEST6:PORT with an IPV6_RTHDR cmsg (SRH)
 *   a_split gso_dns SERVER NAME      UDP_SEGMENT 64: one sendto(SERVER:53) of a 64-octet
 *                                       query for example.com (padded) followed by a query for
 *                                       NAME: the kernel sends two datagrams
 *   a_split connmore_dns SERVER NAME UDP connect(SERVER:53), send() the header with MSG_MORE,
 *                                       then the question
 *   a_split whole_dns SERVER NAME    UDP sendto(SERVER:53) of one whole query, then a reply
 *                                       (reply=1)
 *   a_split corkwhole_dns SERVER NAME   UDP_CORK on, sendto a whole query for public.example,
 *                                       then one for NAME, UDP_CORK off (one datagram)
 *   a_split udpconn_dns SERVER NAME  UDP connect(SERVER:53), then send() a query for NAME
 *   a_split tcp_dns SERVER NAME      TCP connect(SERVER:53), then send() a framed query
 *   a_split conn_len IP PORT LEN     TCP connect to IP:PORT, sockaddr_in in a 128-octet
 *                                       buffer, addrlen LEN
 *   a_split msg_namelen IP PORT LEN  UDP sendmsg to IP:PORT, msg_namelen LEN (buffer 256)
 */
#include "h_common.h"
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <netinet/udp.h>
#include <stdint.h>

#ifndef MSG_FASTOPEN
#define MSG_FASTOPEN 0x20000000
#endif
#ifndef UDP_CORK
#define UDP_CORK 1
#endif
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef IPOPT_LSRR
#define IPOPT_LSRR 131
#endif
#ifndef IPOPT_NOP
#define IPOPT_NOP 1
#endif

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

/* NOP, LSRR len 7 ptr 4, HOP: Linux takes the first address as the first hop. */
static void lsrr(unsigned char o[8], const char *hop) {
    o[0] = IPOPT_NOP; o[1] = IPOPT_LSRR; o[2] = 7; o[3] = 4;
    if (inet_pton(AF_INET, hop, o + 4) != 1) { printf("bad=%s\n", hop); exit(2); }
}

/* A DNS query (header + one question, type A class IN) for NAME into q; its length. */
static int query(unsigned char *q, const char *name) {
    unsigned char h[12] = {0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0};
    memcpy(q, h, 12);
    int n = 12;
    const char *p = name;
    while (*p) {
        const char *d = strchr(p, '.');
        int l = d ? (int)(d - p) : (int)strlen(p);
        q[n++] = l;
        memcpy(q + n, p, l);
        n += l;
        p += l;
        if (*p == '.') p++;
    }
    q[n++] = 0;
    q[n++] = 0; q[n++] = 1; q[n++] = 0; q[n++] = 1;
    return n;
}

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    const char *cmd = argv[1];
    int r = -1, e = 0;
    if (!strcmp(cmd, "lsrr_udp") || !strcmp(cmd, "lsrr_tcp") || !strcmp(cmd, "retopts")) {
        if (argc < 5) return 2;
        struct sockaddr_in a;
        v4(&a, argv[3], atoi(argv[4]));
        unsigned char o[8];
        lsrr(o, argv[2]);
        int tcp = !strcmp(cmd, "lsrr_tcp");
        int fd = socket(AF_INET, tcp ? SOCK_STREAM : SOCK_DGRAM, 0);
        if (!strcmp(cmd, "retopts")) {
            char cbuf[CMSG_SPACE(sizeof o)];
            memset(cbuf, 0, sizeof cbuf);
            struct iovec iov = {"hello", 5};
            struct msghdr m = {0};
            m.msg_name = &a; m.msg_namelen = sizeof a; m.msg_iov = &iov; m.msg_iovlen = 1;
            m.msg_control = cbuf; m.msg_controllen = sizeof cbuf;
            struct cmsghdr *c = CMSG_FIRSTHDR(&m);
            c->cmsg_level = IPPROTO_IP; c->cmsg_type = IP_RETOPTS; c->cmsg_len = CMSG_LEN(sizeof o);
            memcpy(CMSG_DATA(c), o, sizeof o);
            r = sendmsg(fd, &m, 0) < 0 ? -1 : 0;
            e = errno;
        } else {
            if (setsockopt(fd, IPPROTO_IP, IP_OPTIONS, o, sizeof o)) { printf("errno=setsockopt:%s\n", h_en(errno)); return 0; }
            struct timeval tv = {2, 0};
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
            if (tcp) r = connect(fd, (struct sockaddr *)&a, sizeof a);
            else r = sendto(fd, "hello", 5, 0, (struct sockaddr *)&a, sizeof a) < 0 ? -1 : 0;
            e = errno;
        }
    } else if (!strcmp(cmd, "srh_udp") || !strcmp(cmd, "srh_tcp")) {
        if (argc < 5) return 2;
        struct sockaddr_in6 a;
        v6(&a, argv[3], atoi(argv[4]));
        /* struct ipv6_sr_hdr: nexthdr, hdrlen, type 4, segments_left, first_segment, flags,
         * tag(2), then segments[]; segments[0] is the final destination (the kernel writes
         * it), segments[segments_left] the next hop: the packet's IPv6 destination. */
        unsigned char srh[8 + 32];
        memset(srh, 0, sizeof srh);
        srh[1] = 4; srh[2] = 4; srh[3] = 1; srh[4] = 1;
        memcpy(srh + 8, &a.sin6_addr, 16);
        if (inet_pton(AF_INET6, argv[2], srh + 24) != 1) { printf("bad=%s\n", argv[2]); return 2; }
        int tcp = !strcmp(cmd, "srh_tcp");
        int fd = socket(AF_INET6, tcp ? SOCK_STREAM : SOCK_DGRAM, 0);
        if (setsockopt(fd, IPPROTO_IPV6, IPV6_RTHDR, srh, sizeof srh)) { printf("errno=setsockopt:%s\n", h_en(errno)); return 0; }
        struct timeval tv = {2, 0};
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        if (tcp) r = connect(fd, (struct sockaddr *)&a, sizeof a);
        else r = sendto(fd, "hello", 5, 0, (struct sockaddr *)&a, sizeof a) < 0 ? -1 : 0;
        e = errno;
    } else if (!strcmp(cmd, "srh_cmsg")) {
        if (argc < 5) return 2;
        struct sockaddr_in6 a;
        v6(&a, argv[3], atoi(argv[4]));
        unsigned char srh[8 + 32];
        memset(srh, 0, sizeof srh);
        srh[1] = 4; srh[2] = 4; srh[3] = 1; srh[4] = 1;
        memcpy(srh + 8, &a.sin6_addr, 16);
        if (inet_pton(AF_INET6, argv[2], srh + 24) != 1) { printf("bad=%s\n", argv[2]); return 2; }
        int fd = socket(AF_INET6, SOCK_DGRAM, 0);
        char cbuf[CMSG_SPACE(sizeof srh)];
        memset(cbuf, 0, sizeof cbuf);
        struct iovec iov = {"hello", 5};
        struct msghdr m = {0};
        m.msg_name = &a; m.msg_namelen = sizeof a; m.msg_iov = &iov; m.msg_iovlen = 1;
        m.msg_control = cbuf; m.msg_controllen = sizeof cbuf;
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = IPPROTO_IPV6; c->cmsg_type = IPV6_RTHDR; c->cmsg_len = CMSG_LEN(sizeof srh);
        memcpy(CMSG_DATA(c), srh, sizeof srh);
        r = sendmsg(fd, &m, 0) < 0 ? -1 : 0;
        e = errno;
    } else if (!strcmp(cmd, "gso_dns")) {
        struct sockaddr_in a;
        v4(&a, argv[2], 53);
        unsigned char q[700];
        memset(q, 0, sizeof q);
        int n1 = query(q, "example.com");
        (void)n1;
        int n2 = query(q + 64, argv[3]);
        int fd = socket(AF_INET, SOCK_DGRAM, 0);
        int seg = 64;
        if (setsockopt(fd, IPPROTO_UDP, UDP_SEGMENT, &seg, sizeof seg)) { printf("errno=setsockopt:%s\n", h_en(errno)); return 0; }
        r = sendto(fd, q, 64 + n2, 0, (struct sockaddr *)&a, sizeof a) < 0 ? -1 : 0;
        e = errno;
        usleep(200000);
    } else if (!strcmp(cmd, "udpconn_dns") || !strcmp(cmd, "tcp_dns")) {
        struct sockaddr_in a;
        v4(&a, argv[2], 53);
        unsigned char q[600];
        int tcp = !strcmp(cmd, "tcp_dns");
        int n = query(q + 2, argv[3]);
        q[0] = n >> 8; q[1] = n & 0xff;
        int fd = socket(AF_INET, tcp ? SOCK_STREAM : SOCK_DGRAM, 0);
        r = connect(fd, (struct sockaddr *)&a, sizeof a);
        if (r == 0) r = send(fd, tcp ? q : q + 2, tcp ? n + 2 : n, 0) < 0 ? -1 : 0;
        e = errno;
        if (r == 0) {
            struct pollfd p = {fd, POLLIN, 0};
            if (poll(&p, 1, 3000) == 1) {
                unsigned char b[600];
                ssize_t k = recv(fd, b, sizeof b, 0);
                printf("answer_len=%zd\n", k);
            } else printf("answer_len=none\n");
        }
    } else if (!strcmp(cmd, "conn_len") || !strcmp(cmd, "msg_namelen")) {
        if (argc < 5) return 2;
        unsigned char buf[256];
        memset(buf, 0, sizeof buf);
        struct sockaddr_in a;
        v4(&a, argv[2], atoi(argv[3]));
        memcpy(buf, &a, sizeof a);
        int len = atoi(argv[4]);
        if (!strcmp(cmd, "conn_len")) {
            int fd = socket(AF_INET, SOCK_STREAM, 0);
            struct timeval tv = {2, 0};
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
            r = connect(fd, (struct sockaddr *)buf, len);
            e = errno;
        } else {
            int fd = socket(AF_INET, SOCK_DGRAM, 0);
            struct iovec iov = {"hello", 5};
            struct msghdr m = {0};
            m.msg_name = buf; m.msg_namelen = len; m.msg_iov = &iov; m.msg_iovlen = 1;
            r = sendmsg(fd, &m, 0) < 0 ? -1 : 0;
            e = errno;
        }
    } else if (!strcmp(cmd, "tfo_dns")) {
        struct sockaddr_in a;
        v4(&a, argv[2], 53);
        unsigned char q[600];
        int n = query(q + 2, argv[3]);
        q[0] = n >> 8; q[1] = n & 0xff;
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        r = sendto(fd, q, n + 2, MSG_FASTOPEN, (struct sockaddr *)&a, sizeof a) < 0 ? -1 : 0;
        e = errno;
        if (r == 0) {
            struct pollfd p = {fd, POLLIN, 0};
            if (poll(&p, 1, 3000) == 1) {
                unsigned char b[600];
                printf("answer_len=%zd\n", recv(fd, b, sizeof b, 0));
            } else printf("answer_len=none\n");
        }
    } else if (!strcmp(cmd, "cork_dns") || !strcmp(cmd, "cork_dns2") || !strcmp(cmd, "udpcork_dns")) {
        struct sockaddr_in a;
        v4(&a, argv[2], 53);
        unsigned char q[600];
        int n = query(q, argv[3]);
        int fd = socket(AF_INET, SOCK_DGRAM, 0);
        if (!strcmp(cmd, "cork_dns")) {
            r = sendto(fd, q, 12, MSG_MORE, (struct sockaddr *)&a, sizeof a) < 0 ? -1 : 0;
            if (r == 0) r = sendto(fd, q + 12, n - 12, 0, (struct sockaddr *)&a, sizeof a) < 0 ? -1 : 0;
        } else if (!strcmp(cmd, "cork_dns2")) {
            r = sendto(fd, q, 0, MSG_MORE, (struct sockaddr *)&a, sizeof a) < 0 ? -1 : 0;
            if (r == 0) r = send(fd, q, n, 0) < 0 ? -1 : 0;
        } else {
            int one = 1, zero = 0;
            setsockopt(fd, IPPROTO_UDP, UDP_CORK, &one, sizeof one);
            r = sendto(fd, q, 12, 0, (struct sockaddr *)&a, sizeof a) < 0 ? -1 : 0;
            if (r == 0) r = sendto(fd, q + 12, n - 12, 0, (struct sockaddr *)&a, sizeof a) < 0 ? -1 : 0;
            if (r == 0) r = setsockopt(fd, IPPROTO_UDP, UDP_CORK, &zero, sizeof zero);
        }
        e = errno;
        /* Give an ICMP error (the meter's reject) a moment to come back. */
        usleep(200000);
    } else if (!strcmp(cmd, "connmore_dns")) {
        /* Connected to SERVER:53: the header with MSG_MORE, then the question (one datagram). */
        struct sockaddr_in a;
        v4(&a, argv[2], 53);
        unsigned char q[600];
        int n = query(q, argv[3]);
        int fd = socket(AF_INET, SOCK_DGRAM, 0);
        r = connect(fd, (struct sockaddr *)&a, sizeof a);
        if (r == 0) r = send(fd, q, 12, MSG_MORE) < 0 ? -1 : 0;
        if (r == 0) r = send(fd, q + 12, n - 12, 0) < 0 ? -1 : 0;
        e = errno;
        usleep(200000);
    } else if (!strcmp(cmd, "whole_dns") || !strcmp(cmd, "corkwhole_dns")) {
        struct sockaddr_in a;
        v4(&a, argv[2], 53);
        unsigned char q[600], q2[600];
        int n = query(q, argv[3]);
        int fd = socket(AF_INET, SOCK_DGRAM, 0);
        if (!strcmp(cmd, "whole_dns")) {
            r = sendto(fd, q, n, 0, (struct sockaddr *)&a, sizeof a) < 0 ? -1 : 0;
            e = errno;
            if (r == 0) {
                struct pollfd p = {fd, POLLIN, 0};
                printf("reply=%d\n", poll(&p, 1, 3000) == 1 && recv(fd, q2, sizeof q2, 0) > 12);
            }
        } else {
            /* Corked: a whole public question, then a whole one for NAME, then uncork. */
            int one = 1, zero = 0, n2 = query(q2, "public.example");
            setsockopt(fd, IPPROTO_UDP, UDP_CORK, &one, sizeof one);
            r = sendto(fd, q2, n2, 0, (struct sockaddr *)&a, sizeof a) < 0 ? -1 : 0;
            if (r == 0) r = sendto(fd, q, n, 0, (struct sockaddr *)&a, sizeof a) < 0 ? -1 : 0;
            e = errno;
            setsockopt(fd, IPPROTO_UDP, UDP_CORK, &zero, sizeof zero);
            usleep(200000);
        }
    } else {
        return 2;
    }
    printf("errno=%s\n", r < 0 ? h_en(e) : "0");
    return 0;
}
