/* h_vforkpid HOST PORT: a vfork child that is the first to use tsproxy (a getaddrinfo of a
 * tailnet name, made before the parent did anything tsproxy keeps state for) runs in the
 * parent's memory: it must not leave its pid there as the parent's. The parent then adds a
 * socket to an epoll set and connects it (nonblocking) to HOST:PORT, a slow tailnet dial
 * (~1 s): the set must not report the socket before the tunnel is up (with the child's pid
 * taken for its own, the library could not find the registration to hold it back). Reports
 * events and wait_ms. */
#include "h_common.h"
#include <sys/epoll.h>
#include <sys/wait.h>

int main(int argc, char **argv) {
    if (argc != 3) return 1;
    setvbuf(stdout, NULL, _IOLBF, 0);
    pid_t pid = vfork();
    if (pid == 0) {
        struct addrinfo *r;
        getaddrinfo("peer-1", "80", NULL, &r);
        _exit(0);
    }
    waitpid(pid, NULL, 0);
    struct addrinfo *res = h_resolve(argv[1], argv[2], AF_INET);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int ep = epoll_create1(0);
    struct epoll_event ev = { .events = EPOLLOUT, .data.u64 = 9 };
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    double t0 = h_now_ms();
    int rc = connect(fd, res->ai_addr, res->ai_addrlen);
    printf("connect=%s\n", rc ? h_en(errno) : "0");
    struct epoll_event got = { 0 };
    int n = epoll_wait(ep, &got, 1, 8000);
    printf("events=0x%x\nwait_ms=%.0f\n", n == 1 ? got.events : 0, h_now_ms() - t0);
    return 0;
}
