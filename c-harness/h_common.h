/* Shared bits of the h_* hardening programs. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static inline double h_now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static inline const char *h_en(int e) {
    switch (e) {
    case 0: return "0";
    case ECONNREFUSED: return "ECONNREFUSED";
    case ECONNRESET: return "ECONNRESET";
    case ETIMEDOUT: return "ETIMEDOUT";
    case EHOSTUNREACH: return "EHOSTUNREACH";
    case ENETUNREACH: return "ENETUNREACH";
    case EINPROGRESS: return "EINPROGRESS";
    case EAGAIN: return "EAGAIN";
    case EALREADY: return "EALREADY";
    case EISCONN: return "EISCONN";
    case ENOTCONN: return "ENOTCONN";
    case EPIPE: return "EPIPE";
    case EBADF: return "EBADF";
    case EINVAL: return "EINVAL";
    case ENOSYS: return "ENOSYS";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    case EAFNOSUPPORT: return "EAFNOSUPPORT";
    case EPERM: return "EPERM";
    case EACCES: return "EACCES";
    case EFAULT: return "EFAULT";
    case EINTR: return "EINTR";
    default: { static char b[32]; snprintf(b, sizeof b, "errno%d", e); return b; }
    }
}

/* First address of HOST:PORT (getaddrinfo, SOCK_STREAM, given family or AF_UNSPEC). */
static inline struct addrinfo *h_resolve(const char *host, const char *port, int family) {
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_family = family }, *res;
    int r = getaddrinfo(host, port, &hints, &res);
    if (r) { printf("gai=%d\n", r); exit(1); }
    return res;
}

/* Wait for fd's writability with poll (ms); returns revents or 0. */
static inline int h_wait_out(int fd, int ms) {
    struct pollfd p = { fd, POLLOUT, 0 };
    return poll(&p, 1, ms) == 1 ? p.revents : 0;
}

static inline int h_soerr(int fd) {
    int e = -1;
    socklen_t l = sizeof e;
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &l);
    return e;
}

/* Read until EOF or 5 s; print the reply's first line as KEY=... */
static inline void h_reply(int fd, const char *key) {
    char buf[4096];
    size_t have = 0;
    double t0 = h_now_ms();
    while (have < sizeof buf - 1 && h_now_ms() - t0 < 5000) {
        struct pollfd p = { fd, POLLIN, 0 };
        if (poll(&p, 1, 5000) <= 0) break;
        ssize_t n = recv(fd, buf + have, sizeof buf - 1 - have, 0);
        if (n <= 0) break;
        have += n;
    }
    buf[have] = 0;
    char *nl = strpbrk(buf, "\r\n");
    if (nl) *nl = 0;
    printf("%s=%s\n", key, buf);
}

#define H_GET "GET / HTTP/1.0\r\n\r\n"
