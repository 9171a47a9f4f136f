/* h_epolltoken: the library's epoll tokens must never reach the program.
 *
 *   h_epolltoken MODE HOST PORT
 * A waiter thread W blocks in a wait that it entered while nothing was pending; after 200 ms a
 * connector thread C makes a nonblocking connect to HOST:PORT (a tailnet peer speaking HTTP) and
 * registers the socket with data 0x1122334455667788 (EPOLLIN|EPOLLOUT|EPOLLET).
 * MODE:
 *   wait | pwait | pwait2  W in epoll_wait / epoll_pwait / epoll_pwait2 on a fresh epoll fd;
 *                          C: connect, then EPOLL_CTL_ADD
 *   before                 C: EPOLL_CTL_ADD, then connect
 *   move                   C: connect, ADD to set A, 50 ms later DEL from A and ADD to set B;
 *                          W waits on B; A must stay silent
 *   nested                 epoll set A (holding the socket) is itself in set B (data 0xB0B0);
 *                          W waits on B, then on A
 *   poll | select          W blocks in poll/select on a pipe (other fds); C waits for its own
 *                          socket with epoll; W must see only its pipe
 * Output key=value: bad_data=HEX (any epoll data that is not the program's), w_events=HEX,
 * w_ret (poll/select), other_events (set A for move), reply=first line, result=ok|timeout.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define DATA 0x1122334455667788ULL
static const char *mode;
static struct addrinfo *res;
static int epA = -1, epB = -1, sock = -1, pipefd[2];
static volatile int w_events, w_ret = -9, c_done;
static int bad;

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static void check(unsigned long long d, unsigned long long want) {
    if (d != want) {
        printf("bad_data=%llx\n", d);
        fflush(stdout);
        bad = 1;
    }
}

static int ewait(int ep, struct epoll_event *ev, int n, int ms) {
    if (!strcmp(mode, "pwait")) return epoll_pwait(ep, ev, n, ms, NULL);
    if (!strcmp(mode, "pwait2")) {
        struct timespec t = { ms / 1000, (ms % 1000) * 1000000L };
        return epoll_pwait2(ep, ev, n, &t, NULL);
    }
    return epoll_wait(ep, ev, n, ms);
}

/* W on an epoll set: loop until EPOLLOUT with the program's data, at most 5 s. */
static void *waiter_epoll(void *a) {
    (void)a;
    int ep = !strcmp(mode, "move") || !strcmp(mode, "nested") ? epB : epA;
    double t0 = now_ms();
    for (int it = 0; it < 50 && now_ms() - t0 < 5000; it++) {
        struct epoll_event ev[8];
        int n = ewait(ep, ev, 8, 5000);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        for (int i = 0; i < n; i++) {
            if (!strcmp(mode, "nested")) {
                check(ev[i].data.u64, 0xB0B0);
                /* A is readable: wait on A itself now. */
                struct epoll_event e2[8];
                int m = ewait(epA, e2, 8, 0);
                for (int j = 0; j < m; j++) {
                    check(e2[j].data.u64, DATA);
                    if (e2[j].data.u64 == DATA) w_events |= e2[j].events;
                }
            } else {
                check(ev[i].data.u64, DATA);
                if (ev[i].data.u64 == DATA) w_events |= ev[i].events;
            }
        }
        if (w_events & EPOLLOUT) break;
    }
    return NULL;
}

static void *waiter_other(void *a) {
    (void)a;
    if (!strcmp(mode, "poll")) {
        struct pollfd p = { pipefd[0], POLLIN, 0 };
        w_ret = poll(&p, 1, 5000);
        w_events = p.revents;
    } else {
        fd_set r;
        FD_ZERO(&r);
        FD_SET(pipefd[0], &r);
        struct timeval t = { 5, 0 };
        w_ret = select(pipefd[0] + 1, &r, NULL, NULL, &t);
        w_events = w_ret > 0 && FD_ISSET(pipefd[0], &r) ? POLLIN : 0;
    }
    return NULL;
}

static void *connector(void *a) {
    (void)a;
    usleep(200000);
    struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLET, .data.u64 = DATA };
    sock = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (!strcmp(mode, "before")) epoll_ctl(epA, EPOLL_CTL_ADD, sock, &ev);
    int rc = connect(sock, res->ai_addr, res->ai_addrlen);
    printf("connect=%s\n", rc == 0 ? "ok" : errno == EINPROGRESS ? "EINPROGRESS" : strerror(errno));
    fflush(stdout);
    if (!strcmp(mode, "before")) {
    } else if (!strcmp(mode, "move")) {
        epoll_ctl(epA, EPOLL_CTL_ADD, sock, &ev);
        usleep(50000);
        epoll_ctl(epA, EPOLL_CTL_DEL, sock, NULL);
        epoll_ctl(epB, EPOLL_CTL_ADD, sock, &ev);
    } else if (!strcmp(mode, "poll") || !strcmp(mode, "select")) {
        /* C waits for its own socket with its own epoll set. */
        int ep = epoll_create1(EPOLL_CLOEXEC);
        epoll_ctl(ep, EPOLL_CTL_ADD, sock, &ev);
        double t0 = now_ms();
        int got = 0;
        while (!(got & EPOLLOUT) && now_ms() - t0 < 5000) {
            struct epoll_event e[8];
            int n = epoll_wait(ep, e, 8, 5000);
            if (n <= 0) break;
            for (int i = 0; i < n; i++) {
                check(e[i].data.u64, DATA);
                if (e[i].data.u64 == DATA) got |= e[i].events;
            }
        }
        printf("c_events=0x%x\n", got);
        close(ep);
    } else {
        epoll_ctl(epA, EPOLL_CTL_ADD, sock, &ev);
    }
    c_done = 1;
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 4) return 1;
    mode = argv[1];
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM };
    if (getaddrinfo(argv[2], argv[3], &hints, &res)) { printf("gai=fail\n"); return 1; }
    epA = epoll_create1(EPOLL_CLOEXEC);
    if (!strcmp(mode, "move") || !strcmp(mode, "nested")) epB = epoll_create1(EPOLL_CLOEXEC);
    if (!strcmp(mode, "nested")) {
        struct epoll_event e = { .events = EPOLLIN, .data.u64 = 0xB0B0 };
        epoll_ctl(epB, EPOLL_CTL_ADD, epA, &e);
    }
    if (pipe(pipefd)) return 1;
    int other = !strcmp(mode, "poll") || !strcmp(mode, "select");
    pthread_t w, c;
    pthread_create(&w, NULL, other ? waiter_other : waiter_epoll, NULL);
    pthread_create(&c, NULL, connector, NULL);
    pthread_join(c, NULL);
    if (other) {
        if (write(pipefd[1], "x", 1) != 1) return 1;
    }
    pthread_join(w, NULL);
    printf("w_events=0x%x\n", w_events);
    if (other) printf("w_ret=%d\n", w_ret);
    if (!strcmp(mode, "move")) {
        struct epoll_event e[8];
        int n = epoll_wait(epA, e, 8, 0);
        printf("other_events=%d\n", n);
        for (int i = 0; i < n; i++) check(e[i].data.u64, DATA);
    }
    /* The request/reply on the socket. */
    int fl = 0;
    (void)fl;
    struct pollfd p = { sock, POLLOUT, 0 };
    if (poll(&p, 1, 5000) != 1) { printf("result=timeout\n"); return 3; }
    const char *req = "GET / HTTP/1.0\r\n\r\n";
    if (send(sock, req, strlen(req), MSG_NOSIGNAL) < 0) printf("send=%s\n", strerror(errno));
    char buf[4096];
    size_t have = 0;
    double r0 = now_ms();
    while (have < sizeof buf - 1 && now_ms() - r0 < 5000) {
        struct pollfd q = { sock, POLLIN, 0 };
        if (poll(&q, 1, 5000) <= 0) break;
        ssize_t n = recv(sock, buf + have, sizeof buf - 1 - have, 0);
        if (n <= 0) break;
        have += n;
    }
    buf[have] = 0;
    char *nl = strpbrk(buf, "\r\n");
    if (nl) *nl = 0;
    printf("reply=%s\n", buf);
    printf("result=%s\n", bad ? "bad" : "ok");
    return bad ? 4 : 0;
}
