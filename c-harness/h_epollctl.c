/* h_epollctl HOST PORT: epoll_ctl on a socket whose nonblocking connect to HOST:PORT (a slow
 * tailnet dial) is still pending, with the calls the kernel refuses. While a handshake runs
 * the library answers epoll_ctl for the socket itself, and must answer as the kernel does for
 * a socket in SYN_SENT: EFAULT for an unreadable event (not a crash), EINVAL for a MOD of an
 * EPOLLEXCLUSIVE registration, for EPOLLEXCLUSIVE in a MOD, and for EPOLLEXCLUSIVE beside
 * EPOLLONESHOT in an ADD. Prints one NAME=ERRNO line per call ("0" for success), then
 * events=0x.. (what the set reports once the tunnel is up) and done=1. */
#include "h_common.h"
#include <sys/epoll.h>

static void t(const char *name, int r) {
    printf("%s=%s\n", name, r == 0 ? "0" : h_en(errno));
}

int main(int argc, char **argv) {
    if (argc != 3) return 1;
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct addrinfo *res = h_resolve(argv[1], argv[2], AF_INET);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int ep = epoll_create1(0), ep2 = epoll_create1(0);
    struct epoll_event excl = { .events = EPOLLOUT | EPOLLEXCLUSIVE, .data.u64 = 1 };
    struct epoll_event one = { .events = EPOLLOUT | EPOLLONESHOT, .data.u64 = 2 };
    struct epoll_event bad = { .events = EPOLLOUT | EPOLLEXCLUSIVE | EPOLLONESHOT, .data.u64 = 3 };
    t("add_excl", epoll_ctl(ep, EPOLL_CTL_ADD, fd, &excl));
    int rc = connect(fd, res->ai_addr, res->ai_addrlen);
    printf("connect=%s\n", rc ? h_en(errno) : "0");
    t("mod_of_excl", epoll_ctl(ep, EPOLL_CTL_MOD, fd, &one));
    t("add_bad_ptr", epoll_ctl(ep2, EPOLL_CTL_ADD, fd, (struct epoll_event *)8));
    t("mod_bad_ptr", epoll_ctl(ep2, EPOLL_CTL_MOD, fd, (struct epoll_event *)8));
    t("add_excl_oneshot", epoll_ctl(ep2, EPOLL_CTL_ADD, fd, &bad));
    t("add", epoll_ctl(ep2, EPOLL_CTL_ADD, fd, &one));
    t("mod_to_excl", epoll_ctl(ep2, EPOLL_CTL_MOD, fd, &excl));
    t("mod", epoll_ctl(ep2, EPOLL_CTL_MOD, fd, &one));
    struct epoll_event got = { 0 };
    int n = epoll_wait(ep2, &got, 1, 8000);
    printf("events=0x%x data=%llu\n", n == 1 ? got.events : 0, n == 1 ? (unsigned long long)got.data.u64 : 0ULL);
    printf("done=1\n");
    return 0;
}
