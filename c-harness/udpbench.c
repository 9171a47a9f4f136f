/* udpbench: UDP through a SOCKS5 relay, measured (make bench).
 *   udpbench rtt|flood N IP PORT                  plain socket calls (tsproxy under LD_PRELOAD)
 *   udpbench rtt|flood N IP PORT PXPORT USER PASS  a hand-written SOCKS5 UDP client: the floor
 * rtt: N echo round trips of 64 bytes (connected socket, send/recv) -> rtt_p50_us=
 * flood: N datagrams of 64 bytes one way (connected socket) -> dgrams_per_s=
 * Every wait is bounded (2 s per reply).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int exact(int fd, void *b, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t k = read(fd, (char *)b + got, n - got);
        if (k <= 0) return -1;
        got += k;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 5 && argc != 8) return 2;
    int rtt = strcmp(argv[1], "rtt") == 0;
    int n = atoi(argv[2]);
    struct sockaddr_in dst = {0};
    dst.sin_family = AF_INET;
    dst.sin_port = htons(atoi(argv[4]));
    if (inet_pton(AF_INET, argv[3], &dst.sin_addr) != 1) return 2;
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    unsigned char hdr[10] = {0, 0, 0, 1};
    size_t hl = 0;
    int ctl = -1;
    if (argc == 8) {
        /* The floor: SOCKS5 greeting, RFC 1929, UDP ASSOCIATE, then the socket connected to the
         * relay with the header in front of every datagram. */
        struct sockaddr_in lo = {0};
        lo.sin_family = AF_INET;
        lo.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        bind(u, (struct sockaddr *)&lo, sizeof lo);
        socklen_t ll = sizeof lo;
        getsockname(u, (struct sockaddr *)&lo, &ll);
        ctl = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in px = {0};
        px.sin_family = AF_INET;
        px.sin_port = htons(atoi(argv[5]));
        px.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (connect(ctl, (struct sockaddr *)&px, sizeof px) != 0) return 3;
        unsigned char b[600];
        write(ctl, "\x05\x01\x02", 3);
        if (exact(ctl, b, 2) || b[1] != 2) return 3;
        size_t ul = strlen(argv[6]), pl = strlen(argv[7]), k = 0;
        b[k++] = 1; b[k++] = ul; memcpy(b + k, argv[6], ul); k += ul; b[k++] = pl; memcpy(b + k, argv[7], pl); k += pl;
        write(ctl, b, k);
        if (exact(ctl, b, 2) || b[1] != 0) return 3;
        unsigned char req[10] = {5, 3, 0, 1, 0, 0, 0, 0};
        memcpy(req + 8, &lo.sin_port, 2);
        write(ctl, req, 10);
        if (exact(ctl, b, 10) || b[1] != 0 || b[3] != 1) return 3;
        struct sockaddr_in relay = {0};
        relay.sin_family = AF_INET;
        memcpy(&relay.sin_addr, b + 4, 4);
        memcpy(&relay.sin_port, b + 8, 2);
        if (relay.sin_addr.s_addr == 0) relay.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (connect(u, (struct sockaddr *)&relay, sizeof relay) != 0) return 3;
        memcpy(hdr + 4, &dst.sin_addr, 4);
        memcpy(hdr + 8, &dst.sin_port, 2);
        hl = 10;
    } else if (connect(u, (struct sockaddr *)&dst, sizeof dst) != 0) {
        printf("connect=%s\n", strerror(errno));
        return 3;
    }
    unsigned char out[128], in[256];
    memcpy(out, hdr, hl);
    memset(out + hl, 'x', 64);
    double *t = calloc(n, sizeof *t);
    double start = now_us();
    int lost = 0;
    for (int i = 0; i < n; i++) {
        double a = now_us();
        if (send(u, out, hl + 64, 0) < 0) { printf("send=%s\n", strerror(errno)); return 4; }
        if (!rtt) continue;
        struct pollfd p = {u, POLLIN, 0};
        if (poll(&p, 1, 2000) <= 0) { lost++; continue; }
        ssize_t k = recv(u, in, sizeof in, 0);
        if (k != (ssize_t)(hl + 64)) lost++;
        t[i] = now_us() - a;
    }
    double el = now_us() - start;
    if (rtt) {
        qsort(t, n, sizeof *t, cmp);
        printf("rtt_p50_us=%.1f\nrtt_p99_us=%.1f\nlost=%d\n", t[n / 2], t[n * 99 / 100], lost);
    } else {
        printf("dgrams_per_s=%.0f\n", n / (el / 1e6));
    }
    if (ctl >= 0) close(ctl);
    return 0;
}
