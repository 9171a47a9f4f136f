/* evloop: a nonblocking connect waited on the way event loops do, reporting what the socket
 * looked like while pending and once ready.
 *
 *   evloop -m MODE [-t ms] [-s request] [-r] [-d|-D|-3] [-f] [-T] [-q] HOST PORT
 *     MODE: epoll | epoll-et | epoll-oneshot | epoll-before | epoll-pwait | epoll-pwait2 |
 *           poll | ppoll | select | pselect
 *     -t ms   give up after ms (the app's own timeout), then close
 *     -s req  send after connecting (\n becomes \r\n); -r read the reply's first line
 *     -d      wait on a dup() of the socket instead of the socket (-D: fcntl(F_DUPFD_CLOEXEC),
 *             -3: dup3 onto fd 100)
 *     -f      fork while the connect is pending; the child exits at once
 *     -T      (epoll) a second thread waits on the same epoll set too; both report
 *     -q      no pending-phase probes: a send or SO_ERROR read while pending takes a failure
 *             that arrived that fast (as on a kernel socket), so checks of how a failure is
 *             reported after the wait ask for -q to be independent of the schedule
 * key=value lines: connect (EINPROGRESS|ok|errno), connect_us (time inside connect()),
 * pending_* (write, recv, getpeername, connect, SO_ERROR while pending), events (what the wait
 * reported), wait_ms, cpu_ms (CPU burned while waiting), soerr, peer, again (connect after
 * ready), second (events of a second 200 ms wait), reply, fds_before/fds_after.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static double cpu_ms(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1e3 + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e3;
}

static const char *en(int e) {
    switch (e) {
    case 0: return "0";
    case ECONNREFUSED: return "ECONNREFUSED";
    case ETIMEDOUT: return "ETIMEDOUT";
    case EHOSTUNREACH: return "EHOSTUNREACH";
    case ENETUNREACH: return "ENETUNREACH";
    case EINPROGRESS: return "EINPROGRESS";
    case EAGAIN: return "EAGAIN";
    case EALREADY: return "EALREADY";
    case EISCONN: return "EISCONN";
    case ENOTCONN: return "ENOTCONN";
    case EPIPE: return "EPIPE";
    default: return "OTHER";
    }
}

/* The program's own descriptors. tsproxy keeps a few of its own (the handshake thread's epoll
 * set, one wake-up eventfd per thread that waited on a pending socket) close-on-exec in the top
 * quarter of the descriptor limit, out of the program's way: those are not counted. */
static int count_fds(void) {
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    long top = (long)rl.rlim_cur - (long)rl.rlim_cur / 4;
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || atol(e->d_name) == dirfd(d)) continue;
        if (top > 3 && atol(e->d_name) >= top) continue;
        n++;
    }
    closedir(d);
    return n;
}

/* Wait for writability the MODE way. Returns the events seen (poll bits), 0 on timeout. */
static int wait_ready(const char *mode, int fd, int ep, int ms) {
    if (!strncmp(mode, "epoll", 5)) {
        struct epoll_event ev;
        int n;
        if (!strcmp(mode, "epoll-pwait")) n = epoll_pwait(ep, &ev, 1, ms, NULL);
        else if (!strcmp(mode, "epoll-pwait2")) {
            struct timespec t = { ms / 1000, (ms % 1000) * 1000000L };
            n = epoll_pwait2(ep, &ev, 1, ms < 0 ? NULL : &t, NULL);
        } else n = epoll_wait(ep, &ev, 1, ms);
        if (n <= 0) return 0;
        if (ev.data.u64 != 0xfeed0000u + (unsigned)fd) { printf("bad_data=%llx\n", (unsigned long long)ev.data.u64); }
        return ev.events;
    }
    if (!strcmp(mode, "poll") || !strcmp(mode, "ppoll")) {
        struct pollfd p = { fd, POLLOUT, 0 };
        int n;
        if (!strcmp(mode, "poll")) n = poll(&p, 1, ms);
        else {
            struct timespec t = { ms / 1000, (ms % 1000) * 1000000L };
            n = ppoll(&p, 1, ms < 0 ? NULL : &t, NULL);
        }
        return n == 1 ? p.revents : 0;
    }
    fd_set w, x;
    FD_ZERO(&w); FD_ZERO(&x);
    FD_SET(fd, &w); FD_SET(fd, &x);
    int n;
    if (!strcmp(mode, "select")) {
        struct timeval t = { ms / 1000, (ms % 1000) * 1000 };
        n = select(fd + 1, NULL, &w, &x, ms < 0 ? NULL : &t);
    } else {
        struct timespec t = { ms / 1000, (ms % 1000) * 1000000L };
        n = pselect(fd + 1, NULL, &w, &x, ms < 0 ? NULL : &t, NULL);
    }
    return n > 0 && FD_ISSET(fd, &w) ? POLLOUT : 0;
}

static int racer_ep, racer_ms, racer_got;
static unsigned long long racer_data;
static void *racer(void *arg) {
    (void)arg;
    struct epoll_event ev;
    racer_got = epoll_wait(racer_ep, &ev, 1, racer_ms) == 1 ? (int)ev.events : 0;
    racer_data = racer_got ? ev.data.u64 : 0;
    return NULL;
}

int main(int argc, char **argv) {
    const char *mode = "epoll";
    int tmo = 10000, doread = 0, dodup = 0, dofork = 0, race = 0, quiet = 0, opt;
    char req[1024] = "";
    signal(SIGPIPE, SIG_IGN);
    while ((opt = getopt(argc, argv, "m:t:s:rdD3fTq")) != -1) {
        switch (opt) {
        case 'm': mode = optarg; break;
        case 't': tmo = atoi(optarg); break;
        case 's': {
            size_t j = 0;
            for (const char *p = optarg; *p && j < sizeof req - 2; p++) {
                if (*p == '\\' && p[1] == 'n') { req[j++] = '\r'; req[j++] = '\n'; p++; }
                else req[j++] = *p;
            }
            break;
        }
        case 'r': doread = 1; break;
        case 'd': dodup = 1; break;
        case 'D': dodup = 2; break;
        case '3': dodup = 3; break;
        case 'f': dofork = 1; break;
        case 'T': race = 1; break;
        case 'q': quiet = 1; break;
        default: return 1;
        }
    }
    if (optind + 2 != argc) return 1;
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res;
    if (getaddrinfo(argv[optind], argv[optind + 1], &hints, &res)) { printf("gai=fail\n"); return 1; }
    int before = count_fds();
    printf("fds_before=%d\n", before);
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int ep = -1;
    unsigned base = !strcmp(mode, "epoll-et") ? EPOLLET : !strcmp(mode, "epoll-oneshot") ? EPOLLONESHOT : 0;
    if (!strncmp(mode, "epoll", 5)) ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = { .events = EPOLLOUT | EPOLLIN | EPOLLRDHUP | base };
    if (!strcmp(mode, "epoll-before")) {
        ev.data.u64 = 0xfeed0000u + (unsigned)fd;
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
    double t0 = now_ms();
    int rc = connect(fd, res->ai_addr, res->ai_addrlen);
    int cerr = rc ? errno : 0;
    printf("connect_us=%.0f\n", (now_ms() - t0) * 1000);
    printf("connect=%s\n", rc == 0 ? "ok" : en(cerr));
    if (rc && cerr != EINPROGRESS) return 2;
    int wfd = fd;
    if (dodup == 1) wfd = dup(fd);
    if (dodup == 2) wfd = fcntl(fd, F_DUPFD_CLOEXEC, 50);
    if (dodup == 3) wfd = dup3(fd, 100, O_CLOEXEC);
    if (dofork) {
        pid_t p = fork();
        if (p == 0) _exit(0);
        int st;
        waitpid(p, &st, 0);
        printf("forked=%d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    }
    if (rc && !quiet) {
        char b[8];
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int e, soerr = -1;
        socklen_t l = sizeof soerr;
        printf("pending_write=%s\n", send(fd, "x", 0, MSG_NOSIGNAL) < 0 ? en(errno) : "ok");
        printf("pending_recv=%s\n", recv(fd, b, sizeof b, 0) < 0 ? en(errno) : "data");
        printf("pending_peer=%s\n", getpeername(fd, (struct sockaddr *)&ss, &sl) < 0 ? en(errno) : "ok");
        e = connect(fd, res->ai_addr, res->ai_addrlen) < 0 ? errno : 0;
        printf("pending_connect=%s\n", en(e));
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &l);
        printf("pending_soerr=%s\n", en(soerr));
        struct pollfd p = { fd, POLLOUT | POLLIN, 0 };
        printf("pending_poll0=%d\n", poll(&p, 1, 0));
    }
    if (ep >= 0 && strcmp(mode, "epoll-before")) {
        ev.data.u64 = 0xfeed0000u + (unsigned)wfd;
        epoll_ctl(ep, EPOLL_CTL_ADD, wfd, &ev);
    }
    pthread_t rt;
    if (race && ep >= 0) {
        racer_ep = ep;
        racer_ms = tmo;
        pthread_create(&rt, NULL, racer, NULL);
    }
    double c0 = cpu_ms(), w0 = now_ms();
    int got = wait_ready(mode, wfd, ep, tmo);
    if (race && ep >= 0) {
        pthread_join(rt, NULL);
        printf("racer_events=0x%x\n", racer_got);
        if (racer_got && racer_data != 0xfeed0000u + (unsigned)wfd) printf("racer_bad_data=%llx\n", racer_data);
    }
    printf("wait_ms=%.1f\ncpu_ms=%.2f\nevents=0x%x\n", now_ms() - w0, cpu_ms() - c0, got);
    if (!got) {
        printf("result=timeout\n");
        close(fd);
        if (wfd != fd) close(wfd);
        if (ep >= 0) close(ep);
        freeaddrinfo(res);
        printf("fds_after=%d\n", count_fds());
        return 3;
    }
    int soerr = -1;
    socklen_t l = sizeof soerr;
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &l);
    printf("soerr=%s\n", en(soerr));
    if (!soerr) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        char h[64] = "?";
        if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0) {
            if (ss.ss_family == AF_INET) inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, h, sizeof h);
            else inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, h, sizeof h);
        }
        printf("peer=%s\n", h);
        int e = connect(fd, res->ai_addr, res->ai_addrlen) < 0 ? errno : 0;
        printf("again=%s\n", en(e));
        if (ep >= 0) {
            /* A second wait: level-triggered reports again, edge/one-shot do not. */
            struct epoll_event e2;
            int n = epoll_wait(ep, &e2, 1, 200);
            printf("second=%d\n", n);
        }
        if (req[0] && send(fd, req, strlen(req), MSG_NOSIGNAL) < 0) printf("send=%s\n", en(errno));
        if (doread) {
            char buf[4096];
            size_t have = 0;
            double r0 = now_ms();
            while (have < sizeof buf - 1 && now_ms() - r0 < 5000) {
                struct pollfd p = { fd, POLLIN, 0 };
                if (poll(&p, 1, 5000) <= 0) break;
                ssize_t n = recv(fd, buf + have, sizeof buf - 1 - have, 0);
                if (n <= 0) break;
                have += n;
            }
            buf[have] = 0;
            char *nl = strpbrk(buf, "\r\n");
            if (nl) *nl = 0;
            printf("reply=%s\n", buf);
        }
    } else {
        int e = connect(fd, res->ai_addr, res->ai_addrlen) < 0 ? errno : 0;
        printf("again=%s\n", en(e));
    }
    close(fd);
    if (wfd != fd) close(wfd);
    if (ep >= 0) close(ep);
    freeaddrinfo(res);
    printf("fds_after=%d\n", count_fds());
    return soerr ? 2 : 0;
}
