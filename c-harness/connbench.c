/* connbench: the measurements behind `make bench`. One line of key=value per run.
 *
 *   connbench serve PORT                  accept forever, read and discard (the peer)
 *   connbench libc  -n N HOST PORT        N blocking connect()s through libc (so through
 *                                         whatever is preloaded): per-connect p50/p99/mean us
 *   connbench socks -n N -P PROXYPORT HOST PORT
 *                                         the same with a hand-written SOCKS5 client (the floor)
 *   connbench hold  HOST PORT             one nonblocking connect: time inside connect(), CPU
 *                                         while pending, time until writable
 *   connbench many  -n N HOST PORT        N concurrent nonblocking connects from one epoll loop
 *   connbench many-socks -n N -P PROXYPORT HOST PORT
 *                                         the same with a hand-written nonblocking SOCKS5 client
 *   connbench bulk  -b MiB [-P PROXYPORT] HOST PORT
 *                                         connect (libc, or hand-written SOCKS5 with -P) and send
 *   connbench gai   -n N NAME             N getaddrinfo(NAME) calls: ns per call
 *   connbench rss   HOST PORT             connect once; VmRSS in KiB
 *   connbench spawn -n N CMD...           N fork+exec+wait of CMD: per-run p50 us
 *   connbench sys   -n N                  N one-byte reads of /dev/zero: ns per syscall
 * HOST for socks modes is an IPv4 address or a name (sent as a name).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static double cpu_ms(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1e3 + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e3;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void report(const char *what, double *v, int n) {
    qsort(v, n, sizeof *v, cmp);
    double sum = 0;
    for (int i = 0; i < n; i++) sum += v[i];
    printf("%s n=%d p50=%.1f p99=%.1f mean=%.1f\n", what, n, v[n / 2], v[(n * 99) / 100 >= n ? n - 1 : (n * 99) / 100], sum / n);
}

static struct addrinfo *resolve(const char *h, const char *p) {
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_family = AF_INET }, *r;
    if (getaddrinfo(h, p, &hints, &r)) { fprintf(stderr, "resolve %s failed\n", h); exit(1); }
    return r;
}

static int read_exact(int fd, unsigned char *b, int n) {
    int have = 0;
    while (have < n) {
        ssize_t r = recv(fd, b + have, n - have, 0);
        if (r < 0 && errno == EAGAIN) {
            struct pollfd p = { fd, POLLIN, 0 };
            poll(&p, 1, 10000);
            continue;
        }
        if (r <= 0) return -1;
        have += r;
    }
    return 0;
}

/* The SOCKS5 CONNECT request for host:port (IPv4 literal -> ATYP 1, else a name). */
static int socks_request(unsigned char *req, const char *host, int port) {
    int n = 0;
    struct in_addr a;
    req[n++] = 5; req[n++] = 1; req[n++] = 0;
    if (inet_pton(AF_INET, host, &a) == 1) { req[n++] = 1; memcpy(req + n, &a, 4); n += 4; }
    else { size_t l = strlen(host); req[n++] = 3; req[n++] = l; memcpy(req + n, host, l); n += l; }
    req[n++] = port >> 8; req[n++] = port & 255;
    return n;
}

/* Hand-written blocking SOCKS5 dial: the floor tsproxy is measured against. */
static int socks_dial(int proxy_port, const char *host, int port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in px = { .sin_family = AF_INET, .sin_port = htons(proxy_port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    if (connect(fd, (struct sockaddr *)&px, sizeof px)) { close(fd); return -1; }
    unsigned char b[300];
    if (send(fd, "\x05\x01\x00", 3, MSG_NOSIGNAL) != 3 || read_exact(fd, b, 2) || b[1] != 0) { close(fd); return -1; }
    int n = socks_request(b, host, port);
    if (send(fd, b, n, MSG_NOSIGNAL) != n || read_exact(fd, b, 5) || b[1] != 0) { close(fd); return -1; }
    int rest = b[3] == 1 ? 5 : b[3] == 4 ? 17 : b[4] + 2;
    if (read_exact(fd, b, rest)) { close(fd); return -1; }
    return fd;
}

static int serve(int port) {
    int l = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
    if (bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 4096)) { perror("serve"); return 1; }
    int ep = epoll_create1(0);
    struct epoll_event ev = { .events = EPOLLIN, .data.fd = l }, evs[256];
    epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev);
    static char buf[1 << 16];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == l) {
                int c;
                while ((c = accept4(l, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    struct epoll_event e = { .events = EPOLLIN, .data.fd = c };
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &e);
                }
            } else {
                ssize_t r;
                while ((r = read(fd, buf, sizeof buf)) > 0) {}
                if (r == 0 || (r < 0 && errno != EAGAIN)) close(fd);
            }
        }
    }
}

/* N concurrent nonblocking connects, one epoll loop. socks_port > 0: hand-written nonblocking
 * SOCKS5 (connect to proxy, greeting, request, reply) per socket. Returns ms until all done. */
struct c { int fd, st, have; unsigned char b[300]; };
static double many(int n, struct addrinfo *dst, int socks_port, const char *host, int port, int *okp) {
    struct c *cs = calloc(n, sizeof *cs);
    int ep = epoll_create1(0), done = 0, ok = 0;
    double t0 = now_us();
    for (int i = 0; i < n; i++) {
        cs[i].fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        int rc;
        if (socks_port) {
            struct sockaddr_in px = { .sin_family = AF_INET, .sin_port = htons(socks_port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
            rc = connect(cs[i].fd, (struct sockaddr *)&px, sizeof px);
        } else {
            rc = connect(cs[i].fd, dst->ai_addr, dst->ai_addrlen);
        }
        if (rc && errno != EINPROGRESS) { cs[i].st = -1; done++; continue; }
        struct epoll_event ev = { .events = EPOLLOUT, .data.u32 = i };
        epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev);
    }
    struct epoll_event evs[512];
    while (done < n) {
        int k = epoll_wait(ep, evs, 512, 20000);
        if (k <= 0) break;
        for (int j = 0; j < k; j++) {
            struct c *c = &cs[evs[j].data.u32];
            if (c->st < 0 || c->st == 9) continue;
            int e = 0;
            socklen_t l = sizeof e;
            if (c->st == 0) {
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &e, &l);
                if (e) { c->st = -1; done++; continue; }
                if (!socks_port) { c->st = 9; done++; ok++; epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL); continue; }
                send(c->fd, "\x05\x01\x00", 3, MSG_NOSIGNAL);
                c->st = 1; c->have = 0;
                struct epoll_event ev = { .events = EPOLLIN, .data.u32 = evs[j].data.u32 };
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                continue;
            }
            int need = c->st == 1 ? 2 : (c->have < 5 ? 5 : (c->b[3] == 1 ? 10 : c->b[3] == 4 ? 22 : 7 + c->b[4]));
            ssize_t r = recv(c->fd, c->b + c->have, need - c->have, 0);
            if (r <= 0) { if (r < 0 && errno == EAGAIN) continue; c->st = -1; done++; continue; }
            c->have += r;
            if (c->have < need) continue;
            if (c->st == 1) {
                unsigned char q[300];
                int m = socks_request(q, host, port);
                send(c->fd, q, m, MSG_NOSIGNAL);
                c->st = 2; c->have = 0;
            } else if (c->have >= 5 && c->have == need) {
                if (c->b[1] == 0) ok++;
                c->st = 9; done++;
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
            }
        }
    }
    double ms = (now_us() - t0) / 1e3;
    for (int i = 0; i < n; i++) close(cs[i].fd);
    close(ep);
    free(cs);
    *okp = ok;
    return ms;
}

int main(int argc, char **argv) {
    if (argc < 2) return 1;
    const char *mode = argv[1];
    signal(SIGPIPE, SIG_IGN);
    if (!strcmp(mode, "serve")) return serve(atoi(argv[2]));
    int n = 100, proxy = 0, mib = 256, opt;
    optind = 2;
    while ((opt = getopt(argc, argv, "+n:P:b:")) != -1) {
        switch (opt) {
        case 'n': n = atoi(optarg); break;
        case 'P': proxy = atoi(optarg); break;
        case 'b': mib = atoi(optarg); break;
        default: return 1;
        }
    }
    char **rest = argv + optind;
    int nrest = argc - optind;
    if (!strcmp(mode, "spawn")) {
        double *v = calloc(n, sizeof *v);
        for (int i = 0; i < n; i++) {
            double t = now_us();
            pid_t p = fork();
            if (p == 0) { execvp(rest[0], rest); _exit(127); }
            int st;
            waitpid(p, &st, 0);
            v[i] = now_us() - t;
        }
        report("spawn_us", v, n);
        return 0;
    }
    if (!strcmp(mode, "sys")) {
        int z = open("/dev/zero", O_RDONLY | O_CLOEXEC);
        char c;
        double t = now_us();
        for (int i = 0; i < n; i++) (void)!read(z, &c, 1);
        printf("sys_ns=%.1f\n", (now_us() - t) * 1e3 / n);
        return 0;
    }
    if (!strcmp(mode, "gai")) {
        struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *r;
        double t = now_us();
        for (int i = 0; i < n; i++) {
            if (getaddrinfo(rest[0], "80", &hints, &r)) { printf("gai=fail\n"); return 1; }
            freeaddrinfo(r);
        }
        printf("gai_ns=%.0f\n", (now_us() - t) * 1e3 / n);
        return 0;
    }
    if (!strcmp(mode, "gaifmt")) {
        /* getaddrinfo of a new name each call (FMT has one %d), AF_UNSPEC as programs ask:
         * what a lookup through the system resolver costs, no cache anywhere. */
        struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *r;
        double *v = calloc(n, sizeof *v);
        char name[256];
        for (int i = 0; i < n; i++) {
            snprintf(name, sizeof name, rest[0], i);
            double t = now_us();
            if (getaddrinfo(name, "80", &hints, &r)) { printf("gai=fail %s\n", name); return 1; }
            v[i] = now_us() - t;
            freeaddrinfo(r);
        }
        report("gaifmt", v, n);
        return 0;
    }
    if (nrest != 2) return 1;
    const char *host = rest[0];
    int port = atoi(rest[1]);
    if (!strcmp(mode, "libc") || !strcmp(mode, "socks")) {
        struct addrinfo *dst = proxy ? NULL : resolve(host, rest[1]);
        double *v = calloc(n, sizeof *v);
        int fails = 0;
        for (int i = 0; i < n; i++) {
            double t = now_us();
            int fd;
            if (proxy) fd = socks_dial(proxy, host, port);
            else {
                fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (connect(fd, dst->ai_addr, dst->ai_addrlen)) { close(fd); fd = -1; }
            }
            v[i] = now_us() - t;
            if (fd < 0) fails++;
            else close(fd);
        }
        printf("fails=%d ", fails);
        report("connect_us", v, n);
        return fails != 0;
    }
    if (!strcmp(mode, "hold")) {
        struct addrinfo *dst = resolve(host, rest[1]);
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        double c0 = cpu_ms(), t = now_us();
        int rc = connect(fd, dst->ai_addr, dst->ai_addrlen);
        double hold = now_us() - t;
        int e = rc ? errno : 0;
        int ep = epoll_create1(0);
        struct epoll_event ev = { .events = EPOLLOUT, .data.fd = fd }, out;
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
        int k = epoll_wait(ep, &out, 1, 30000);
        int soerr = 0;
        socklen_t l = sizeof soerr;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &l);
        printf("hold_us=%.0f connect=%s ready=%d soerr=%d total_ms=%.1f cpu_ms=%.2f\n", hold, rc == 0 ? "ok" : e == EINPROGRESS ? "EINPROGRESS" : strerror(e), k, soerr, (now_us() - t) / 1e3, cpu_ms() - c0);
        return 0;
    }
    if (!strcmp(mode, "many") || !strcmp(mode, "many-socks")) {
        struct rlimit rl = { 65536, 65536 };
        setrlimit(RLIMIT_NOFILE, &rl);
        struct addrinfo *dst = proxy ? NULL : resolve(host, rest[1]);
        int ok;
        double ms = many(n, dst, proxy, host, port, &ok);
        printf("many n=%d ok=%d ms=%.1f\n", n, ok, ms);
        return ok != n;
    }
    if (!strcmp(mode, "bulk")) {
        int fd;
        if (proxy) fd = socks_dial(proxy, host, port);
        else {
            struct addrinfo *dst = resolve(host, rest[1]);
            fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            if (connect(fd, dst->ai_addr, dst->ai_addrlen)) fd = -1;
        }
        if (fd < 0) { printf("bulk=fail\n"); return 1; }
        static char buf[1 << 16];
        long long total = (long long)mib << 20, sent = 0;
        double t = now_us();
        while (sent < total) {
            ssize_t w = send(fd, buf, sizeof buf, MSG_NOSIGNAL);
            if (w <= 0) break;
            sent += w;
        }
        shutdown(fd, SHUT_WR);
        char c;
        while (recv(fd, &c, 1, 0) > 0) {}
        printf("bulk_mib_s=%.1f\n", sent / 1048576.0 / ((now_us() - t) / 1e6));
        return 0;
    }
    if (!strcmp(mode, "rss")) {
        struct addrinfo *dst = resolve(host, rest[1]);
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(fd, dst->ai_addr, dst->ai_addrlen)) { printf("rss=fail\n"); return 1; }
        FILE *f = fopen("/proc/self/status", "r");
        char line[256];
        while (fgets(line, sizeof line, f))
            if (!strncmp(line, "VmRSS:", 6)) printf("rss_kib=%ld\n", strtol(line + 6, NULL, 10));
        return 0;
    }
    return 1;
}
