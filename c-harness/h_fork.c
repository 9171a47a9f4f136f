/* h_fork CHILD WHEN HOST PORT: a nonblocking connect to HOST:PORT (a slow tailnet dial), fork
 * while it is pending; the child (CHILD = sleep: sleeps 2 s and exits without touching the
 * socket; close: closes it, then sleeps 2 s; exit: like sleep but exit(0) instead of _exit;
 * poll: polls the inherited socket for POLLOUT (6 s), exit 0 when it became writable no sooner
 * than 700 ms after the fork — the tunnel is the parent's and takes ~1 s —, 4 if never, 5 if too
 * early) exits 0; the parent waits with epoll (8 s; WHEN = before: the socket was added to the epoll
 * set before fork, after: after it), sends a GET and reads the reply. Reports connect, events,
 * soerr, reply, child. With H_SIGCHLD=1 in the environment a SIGCHLD handler (no SA_RESTART) is
 * installed and the parent retries epoll_wait on EINTR, as event loops do.
 * CHILD = vfork-close, vfork-close_range, vfork-dup2: the child is made by vfork() instead, and
 * before _exit closes the socket (close, or close_range(3, ~0U, 0)) or dup2s it onto stdin and
 * closes it, as CPython's subprocess does in its vfork child before exec: the child runs in the
 * parent's memory, so nothing it does may touch the parent's handshake. */
#include "h_common.h"
#include <sys/epoll.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>

static void on_chld(int s) { (void)s; }

int main(int argc, char **argv) {
    if (argc != 5) return 1;
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (getenv("H_SIGCHLD")) {
        struct sigaction sa = { .sa_handler = on_chld };
        sigaction(SIGCHLD, &sa, NULL);
    }
    struct addrinfo *res = h_resolve(argv[3], argv[4], AF_UNSPEC);
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int rc = connect(fd, res->ai_addr, res->ai_addrlen);
    printf("connect=%s\n", rc ? h_en(errno) : "ok");
    fflush(stdout);
    int before = !strcmp(argv[2], "before");
    int ep = epoll_create1(0);
    struct epoll_event ev = { .events = EPOLLOUT, .data.u64 = 7 };
    if (before) epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    pid_t pid;
    if (!strncmp(argv[1], "vfork-", 6)) {
        /* Only calls, no stores, in the child: it runs on the parent's stack. */
        pid = vfork();
        if (pid == 0) {
            if (!strcmp(argv[1], "vfork-close")) close(fd);
            else if (!strcmp(argv[1], "vfork-close_range")) close_range(3, ~0U, 0);
            else if (dup2(fd, 0) == 0) close(fd);
            _exit(0);
        }
    } else pid = fork();
    if (pid == 0) {
        if (!strcmp(argv[1], "poll")) {
            double f0 = h_now_ms();
            struct pollfd p = { fd, POLLOUT, 0 };
            int k = poll(&p, 1, 6000);
            if (k != 1 || !(p.revents & POLLOUT)) _exit(4);
            _exit(h_now_ms() - f0 < 700 ? 5 : 0);
        }
        if (!strcmp(argv[1], "close")) close(fd);
        sleep(2);
        if (!strcmp(argv[1], "exit")) exit(0);
        _exit(0);
    }
    if (!before) epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    struct epoll_event got = { 0 };
    int n;
    double t0 = h_now_ms();
    do n = epoll_wait(ep, &got, 1, 8000); while (n < 0 && errno == EINTR && h_now_ms() - t0 < 8000);
    printf("events=0x%x\n", n == 1 ? got.events : 0);
    printf("soerr=%s\n", h_en(h_soerr(fd)));
    if (send(fd, H_GET, strlen(H_GET), MSG_NOSIGNAL) < 0) printf("send=%s\n", h_en(errno));
    h_reply(fd, "reply");
    int st;
    waitpid(pid, &st, 0);
    printf("child=%d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    return 0;
}
