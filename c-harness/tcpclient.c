/* tcpclient: resolve and connect the way ordinary C programs do, then report what libc said.
 *
 *   tcpclient [-4|-6] [-n] [-F] [-T ms] [-C] [-s request] [-r] HOST PORT
 *     -4/-6   getaddrinfo hint AF_INET / AF_INET6 (default AF_UNSPEC, first result used)
 *     -n      nonblocking socket: connect, then wait with poll() and read SO_ERROR
 *     -F      no connect(): sendto(MSG_FASTOPEN) with the request (TCP Fast Open style)
 *     -T ms   SO_SNDTIMEO before connect
 *     -C      create the socket with SOCK_CLOEXEC and check flags survive
 *     -s req  send this after connecting (\n becomes \r\n)
 *     -r      read until EOF or 64 KiB and print the first line as reply=
 * Prints key=value lines: family, connect, errno, elapsed_ms, peer, same_fd, flags_ok, reply.
 * Exit: 0 connected, 2 connect failed, 1 usage/resolution error.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static const char *ename(int e) {
    switch (e) {
    case ECONNREFUSED: return "ECONNREFUSED";
    case ETIMEDOUT: return "ETIMEDOUT";
    case EHOSTUNREACH: return "EHOSTUNREACH";
    case ENETUNREACH: return "ENETUNREACH";
    case EINPROGRESS: return "EINPROGRESS";
    case EAGAIN: return "EAGAIN";
    case EAFNOSUPPORT: return "EAFNOSUPPORT";
    case EINVAL: return "EINVAL";
    case EISCONN: return "EISCONN";
    case EALREADY: return "EALREADY";
    case ECONNRESET: return "ECONNRESET";
    default: return "OTHER";
    }
}

static void print_addr(const char *key, const struct sockaddr *sa) {
    char h[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s = (const void *)sa;
        inet_ntop(AF_INET, &s->sin_addr, h, sizeof h);
        port = ntohs(s->sin_port);
        printf("%s=%s:%d\n", key, h, port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s = (const void *)sa;
        inet_ntop(AF_INET6, &s->sin6_addr, h, sizeof h);
        port = ntohs(s->sin6_port);
        printf("%s=[%s]:%d\n", key, h, port);
    } else {
        printf("%s=family%d\n", key, sa->sa_family);
    }
}

int main(int argc, char **argv) {
    int fam = AF_UNSPEC, nonblock = 0, fastopen = 0, cloexec = 0, doread = 0, tmo = 0, opt;
    char req[4096] = "";
    while ((opt = getopt(argc, argv, "46nFT:Cs:r")) != -1) {
        switch (opt) {
        case '4': fam = AF_INET; break;
        case '6': fam = AF_INET6; break;
        case 'n': nonblock = 1; break;
        case 'F': fastopen = 1; break;
        case 'T': tmo = atoi(optarg); break;
        case 'C': cloexec = 1; break;
        case 's': {
            size_t j = 0;
            for (const char *p = optarg; *p && j < sizeof req - 2; p++) {
                if (*p == '\\' && p[1] == 'n') { req[j++] = '\r'; req[j++] = '\n'; p++; }
                else req[j++] = *p;
            }
            req[j] = 0;
            break;
        }
        case 'r': doread = 1; break;
        default: return 1;
        }
    }
    if (optind + 2 != argc) { fprintf(stderr, "usage: tcpclient [opts] HOST PORT\n"); return 1; }
    struct addrinfo hints = {0}, *res;
    hints.ai_family = fam;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(argv[optind], argv[optind + 1], &hints, &res);
    if (rc) { printf("gai=%s\n", gai_strerror(rc)); return 1; }
    printf("family=%d\n", res->ai_family == AF_INET ? 4 : 6);
    print_addr("resolved", res->ai_addr);
    int type = SOCK_STREAM | (cloexec ? SOCK_CLOEXEC : 0) | (nonblock ? SOCK_NONBLOCK : 0);
    int fd = socket(res->ai_family, type, 0);
    if (fd < 0) { perror("socket"); return 1; }
    struct stat st0, st1;
    fstat(fd, &st0);
    int fl0 = fcntl(fd, F_GETFL), fd0 = fcntl(fd, F_GETFD);
    if (tmo) {
        struct timeval tv = { tmo / 1000, (tmo % 1000) * 1000 };
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    }
    double t0 = now_ms();
    int err = 0;
    if (fastopen) {
        ssize_t n = sendto(fd, req, strlen(req), MSG_FASTOPEN, res->ai_addr, res->ai_addrlen);
        if (n < 0) err = errno;
        else { printf("fastopen_sent=%zd\n", n); req[0] = 0; }
    } else if (connect(fd, res->ai_addr, res->ai_addrlen) < 0) {
        err = errno;
        if (nonblock && err == EINPROGRESS) {
            struct pollfd p = { fd, POLLOUT, 0 };
            int pr = poll(&p, 1, 30000);
            socklen_t l = sizeof err;
            err = 0;
            if (pr == 1) getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l);
            else err = ETIMEDOUT;
        }
    }
    printf("elapsed_ms=%.1f\n", now_ms() - t0);
    fstat(fd, &st1);
    printf("same_fd=%d\n", st0.st_ino == st1.st_ino);
    printf("flags_ok=%d\n", fcntl(fd, F_GETFL) == fl0 && fcntl(fd, F_GETFD) == fd0);
    if (err) {
        printf("connect=fail\nerrno=%s\n", ename(err));
        return 2;
    }
    printf("connect=ok\n");
    struct sockaddr_storage peer;
    socklen_t pl = sizeof peer;
    if (getpeername(fd, (struct sockaddr *)&peer, &pl) == 0) print_addr("peer", (struct sockaddr *)&peer);
    else printf("peer=error:%s\n", ename(errno));
    if (nonblock) { int fl = fcntl(fd, F_GETFL); fcntl(fd, F_SETFL, fl & ~O_NONBLOCK); }
    if (req[0] && send(fd, req, strlen(req), MSG_NOSIGNAL) < 0) printf("send=error:%s\n", ename(errno));
    if (doread) {
        static char buf[65536];
        size_t have = 0;
        ssize_t n;
        while (have < sizeof buf - 1 && (n = read(fd, buf + have, sizeof buf - 1 - have)) > 0) have += n;
        buf[have] = 0;
        char *nl = strpbrk(buf, "\r\n");
        if (nl) *nl = 0;
        printf("reply=%s\n", buf);
    }
    fflush(stdout);
    close(fd);
    freeaddrinfo(res);
    return 0;
}
