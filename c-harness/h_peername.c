/* h_peername ADDR6 PORT: an AF_INET6 socket tunnelled to [ADDR6]:PORT (an HTTP peer).
 * getpeername into a 16-byte sockaddr_in followed by a canary; then recvfrom and recvmsg with a
 * 4-byte address buffer followed by a canary. Reports: peer_rc, peer_len, peer_canary (ok or
 * the number of bytes overwritten), peer_prefix (the 16 bytes written match the real
 * sockaddr_in6's first 16: ok|bad), recvfrom_len, recvfrom_canary, recvmsg_len, recvmsg_canary,
 * reply. */
#include "h_common.h"
#include <netinet/in.h>

struct guarded { unsigned char buf[16]; unsigned char canary[64]; };

static int smashed(const unsigned char *c, size_t n) {
    int k = 0;
    for (size_t i = 0; i < n; i++) k += c[i] != 0xAA;
    return k;
}

static void canary(const char *key, const unsigned char *c, size_t n) {
    int k = smashed(c, n);
    if (k) printf("%s=smashed:%d\n", key, k); else printf("%s=ok\n", key);
}

int main(int argc, char **argv) {
    if (argc != 3) return 1;
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct sockaddr_in6 dst = { .sin6_family = AF_INET6, .sin6_port = htons(atoi(argv[2])) };
    if (inet_pton(AF_INET6, argv[1], &dst.sin6_addr) != 1) return 1;
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    if (connect(fd, (struct sockaddr *)&dst, sizeof dst)) { printf("connect=%s\n", h_en(errno)); return 2; }
    printf("connect=ok\n");

    struct guarded g;
    memset(&g, 0xAA, sizeof g);
    socklen_t len = sizeof(struct sockaddr_in);
    int rc = getpeername(fd, (struct sockaddr *)g.buf, &len);
    printf("peer_rc=%d\npeer_len=%u\n", rc, (unsigned)len);
    canary("peer_canary", g.canary, sizeof g.canary);
    printf("peer_prefix=%s\n", memcmp(g.buf, &dst, 16) == 0 ? "ok" : "bad");

    if (send(fd, H_GET, strlen(H_GET), MSG_NOSIGNAL) < 0) printf("send=%s\n", h_en(errno));
    struct pollfd p = { fd, POLLIN, 0 };
    poll(&p, 1, 5000);

    struct { unsigned char buf[4]; unsigned char canary[64]; } s;
    memset(&s, 0xAA, sizeof s);
    socklen_t sl = 4;
    char b[8];
    ssize_t n = recvfrom(fd, b, 1, 0, (struct sockaddr *)s.buf, &sl);
    printf("recvfrom_rc=%zd\nrecvfrom_len=%u\n", n, (unsigned)sl);
    canary("recvfrom_canary", s.canary, sizeof s.canary);

    memset(&s, 0xAA, sizeof s);
    struct iovec iov = { b, 1 };
    struct msghdr m = { .msg_name = s.buf, .msg_namelen = 4, .msg_iov = &iov, .msg_iovlen = 1 };
    n = recvmsg(fd, &m, 0);
    printf("recvmsg_rc=%zd\nrecvmsg_len=%u\n", n, (unsigned)m.msg_namelen);
    canary("recvmsg_canary", s.canary, sizeof s.canary);
    h_reply(fd, "rest");
    close(fd);
    return 0;
}
