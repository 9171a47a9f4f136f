/* h_select1024 HOST PORT: raise RLIMIT_NOFILE, dup 1100 fds, nonblocking connect (the socket's
 * fd is above 1024), select() on heap fd_sets sized for it (5 s timeout). Reports fd, select,
 * writable, wait_ms, cpu_ms, soerr, reply. */
#include "h_common.h"
#include <sys/resource.h>
#include <sys/select.h>

static double cpu_ms(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1e3 + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e3;
}

int main(int argc, char **argv) {
    if (argc != 3) return 1;
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_max < 1200) { printf("skip=hard limit %lu\n", (unsigned long)rl.rlim_max); return 0; }
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    for (int i = 0; i < 1100; i++) if (dup(0) < 0) { printf("dup=%s\n", h_en(errno)); return 1; }
    struct addrinfo *res = h_resolve(argv[1], argv[2], AF_UNSPEC);
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK, 0);
    printf("fd=%d\n", fd);
    int rc = connect(fd, res->ai_addr, res->ai_addrlen);
    printf("connect=%s\n", rc ? h_en(errno) : "ok");
    size_t words = fd / (8 * sizeof(long)) + 1;
    unsigned long *w = calloc(words, sizeof(long));
    unsigned long *x = calloc(words, sizeof(long));
    w[fd / (8 * sizeof(long))] |= 1UL << (fd % (8 * sizeof(long)));
    x[fd / (8 * sizeof(long))] |= 1UL << (fd % (8 * sizeof(long)));
    struct timeval t = { 5, 0 };
    double c0 = cpu_ms(), t0 = h_now_ms();
    int n = select(fd + 1, NULL, (fd_set *)w, (fd_set *)x, &t);
    printf("select=%d\nwait_ms=%.0f\ncpu_ms=%.0f\n", n, h_now_ms() - t0, cpu_ms() - c0);
    printf("writable=%d\n", n > 0 && (w[fd / (8 * sizeof(long))] >> (fd % (8 * sizeof(long))) & 1));
    printf("soerr=%s\n", h_en(h_soerr(fd)));
    if (send(fd, H_GET, strlen(H_GET), MSG_NOSIGNAL) < 0) printf("send=%s\n", h_en(errno));
    h_reply(fd, "reply");
    return 0;
}
