/* h_closerange HOST PORT [syscall]: a nonblocking connect through tsproxy (the library's driver thread
 * and its descriptors come to life), the tunnel used, then close_range(3, ~0U, 0) as a daemon or
 * a child before exec does — then the same again. Reports first=, closed=, second=, and
 * second_reply=. The program's close_range must close the program's descriptors only: the
 * driver's epoll set and wake-up eventfds are tsproxy's, and the second connect needs them. */
#include "h_common.h"
#include <fcntl.h>
#include <poll.h>
#include <sys/syscall.h>

static const char *one(const char *host, const char *port, const char *tag) {
    struct addrinfo *res = h_resolve(host, port, AF_UNSPEC);
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int rc = connect(fd, res->ai_addr, res->ai_addrlen);
    if (rc != 0 && errno != EINPROGRESS) return h_en(errno);
    struct pollfd p = { fd, POLLOUT, 0 };
    int n = poll(&p, 1, 5000);
    if (n != 1) return n == 0 ? "poll-timeout" : h_en(errno);
    int e = h_soerr(fd);
    if (e) return h_en(e);
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    if (send(fd, H_GET, strlen(H_GET), MSG_NOSIGNAL) < 0) return h_en(errno);
    h_reply(fd, tag);
    return "ok";
}

int main(int argc, char **argv) {
    if (argc != 3 && argc != 4) return 1;
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("first=%s\n", one(argv[1], argv[2], "first_reply"));
    /* "syscall": the way programs older than glibc's wrapper (2.34) call it. */
    int rc = argc == 4 ? (int)syscall(SYS_close_range, 3, ~0U, 0) : close_range(3, ~0U, 0);
    printf("closed=%s\n", rc ? h_en(errno) : "ok");
    /* Program descriptors reuse the low numbers; ours are at the top of the range. Open a few
     * so that the numbers move on as in a real program. */
    for (int i = 0; i < 8; i++) dup(1);
    printf("second=%s\n", one(argv[1], argv[2], "second_reply"));
    return 0;
}
