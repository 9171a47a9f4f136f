/* stress: many threads connecting at once (blocking, nonblocking+epoll, nonblocking+poll in
 * turn), while another thread forks children (and double-forked daemons) that connect too.
 *
 *   stress [-t threads] [-n per_thread] [-f forks] [-s max_seconds] HOST PORT
 * Every connection must read the peer's first line starting with "HELLO". Prints ok, fail,
 * forks_ok, forks_fail, fds_before, fds_after, ms. An alarm ends a hung run (exit 99).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/resource.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static struct addrinfo *target;
static int per_thread = 200, forks = 50;
static atomic_int ok, fail, forks_ok, forks_fail;

/* The program's own descriptors: tsproxy's (close-on-exec, at the top of the limit) are not
 * counted; see evloop.c. */
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

static int wait_fd(int fd, int events, int ms) {
    struct pollfd p = { fd, events, 0 };
    return poll(&p, 1, ms) == 1 ? p.revents : 0;
}

/* One connection in the given style; 1 when the banner arrived. */
static int one(int style) {
    int fd = socket(target->ai_family, SOCK_STREAM | SOCK_CLOEXEC | (style ? SOCK_NONBLOCK : 0), 0);
    if (fd < 0) return 0;
    int good = 0;
    int rc = connect(fd, target->ai_addr, target->ai_addrlen);
    if (rc < 0 && errno == EINPROGRESS) {
        if (style == 1) {
            int ep = epoll_create1(EPOLL_CLOEXEC);
            struct epoll_event ev = { .events = EPOLLOUT, .data.fd = fd }, out;
            epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
            rc = epoll_wait(ep, &out, 1, 10000) == 1 ? 0 : -1;
            close(ep);
        } else {
            rc = wait_fd(fd, POLLOUT, 10000) ? 0 : -1;
        }
        int e = 0;
        socklen_t l = sizeof e;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &l);
        if (e) rc = -1;
    }
    if (rc == 0) {
        char buf[64];
        size_t have = 0;
        while (have < 5 && wait_fd(fd, POLLIN, 10000)) {
            ssize_t n = recv(fd, buf + have, sizeof buf - have, 0);
            if (n <= 0) break;
            have += n;
        }
        good = have >= 5 && !memcmp(buf, "HELLO", 5);
    }
    close(fd);
    return good;
}

static void *worker(void *arg) {
    (void)arg;
    for (int i = 0; i < per_thread; i++) {
        if (one(i % 3)) ok++;
        else fail++;
    }
    return NULL;
}

static void *forker(void *arg) {
    (void)arg;
    for (int j = 0; j < forks; j++) {
        int pfd[2];
        if (pipe2(pfd, O_CLOEXEC)) { forks_fail++; continue; }
        pid_t pid = fork();
        if (pid == 0) {
            if (j % 4 == 3) {
                /* daemonize: double fork, the grandchild reports through the pipe */
                if (fork() != 0) _exit(0);
                setsid();
            }
            char r = one(j % 3) ? 'y' : 'n';
            (void)!write(pfd[1], &r, 1);
            _exit(0);
        }
        close(pfd[1]);
        char r = 'n';
        if (wait_fd(pfd[0], POLLIN, 20000)) (void)!read(pfd[0], &r, 1);
        close(pfd[0]);
        waitpid(pid, NULL, 0);
        if (r == 'y') forks_ok++;
        else forks_fail++;
    }
    return NULL;
}

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

int main(int argc, char **argv) {
    int threads = 64, max_s = 60, opt;
    while ((opt = getopt(argc, argv, "t:n:f:s:")) != -1) {
        switch (opt) {
        case 't': threads = atoi(optarg); break;
        case 'n': per_thread = atoi(optarg); break;
        case 'f': forks = atoi(optarg); break;
        case 's': max_s = atoi(optarg); break;
        default: return 1;
        }
    }
    if (optind + 2 != argc) return 1;
    signal(SIGPIPE, SIG_IGN);
    alarm(max_s);
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM };
    if (getaddrinfo(argv[optind], argv[optind + 1], &hints, &target)) return 1;
    int before = count_fds();
    double t0 = now_ms();
    pthread_t th[1024], ft;
    if (threads > 1024) threads = 1024;
    pthread_create(&ft, NULL, forker, NULL);
    for (int i = 0; i < threads; i++) pthread_create(&th[i], NULL, worker, NULL);
    for (int i = 0; i < threads; i++) pthread_join(th[i], NULL);
    pthread_join(ft, NULL);
    printf("ok=%d\nfail=%d\nforks_ok=%d\nforks_fail=%d\nfds_before=%d\nfds_after=%d\nms=%.0f\n", ok, fail, forks_ok, forks_fail, before, count_fds(), now_ms() - t0);
    freeaddrinfo(target);
    return fail || forks_fail ? 2 : 0;
}
