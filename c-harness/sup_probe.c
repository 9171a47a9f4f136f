/* Probes for the seccomp supervisor's never-leak rules, built with -static (the preload
 * library cannot reach it; only the supervisor can). Prints key=value lines.
 *
 *   sup_probe int80 IP PORT       i386 connect (int 0x80, nr 362) on a TCP socket
 *   sup_probe sendmsg IP PORT     UDP sendmsg with msg_name
 *   sup_probe sendmmsg IP PORT    UDP sendmmsg: one datagram to 127.0.0.2:9, one to IP:PORT
 *   sup_probe sendto0 IP PORT     UDP sendto with sin_family 0 (the kernel reads AF_INET)
 *   sup_probe connect24 IP6 PORT  TCP connect with a 24-byte (RFC 2133) sockaddr_in6
 *   sup_probe io_uring            io_uring_setup(8)
 *   sup_probe sigconnect IP PORT  blocking TCP connect with a 100 ms SIGALRM interval timer
 *                                 (no SA_RESTART), then write "PING", read the reply
 *   sup_probe many N IP PORT      N processes connect at once; counts results
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *ename(int e) {
    switch (e) {
    case 0: return "0";
    case ENOSYS: return "ENOSYS";
    case ENETUNREACH: return "ENETUNREACH";
    case ECONNREFUSED: return "ECONNREFUSED";
    case EINTR: return "EINTR";
    case EAGAIN: return "EAGAIN";
    case EINVAL: return "EINVAL";
    case EFAULT: return "EFAULT";
    case EALREADY: return "EALREADY";
    case EISCONN: return "EISCONN";
    default: { static char b[32]; snprintf(b, sizeof b, "E%d", e); return b; }
    }
}

static void v4(struct sockaddr_in *a, const char *ip, int port) {
    memset(a, 0, sizeof *a);
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    inet_pton(AF_INET, ip, &a->sin_addr);
}

static int alarms;
static void on_alarm(int s) { (void)s; alarms++; }

static int one_connect(const char *ip, int port) {
    struct sockaddr_in a;
    v4(&a, ip, port);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    return connect(fd, (struct sockaddr *)&a, sizeof a) == 0 ? 0 : errno;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    const char *cmd = argv[1];
    if (!strcmp(cmd, "io_uring")) {
        char params[120];
        memset(params, 0, sizeof params);
        long r = syscall(425 /* io_uring_setup */, 8, params);
        printf("errno=%s\n", r < 0 ? ename(errno) : "0");
        return 0;
    }
    if (!strcmp(cmd, "many") && argc == 5) {
        int n = atoi(argv[2]);
        int pfd[2];
        if (pipe(pfd)) return 1;
        for (int i = 0; i < n; i++) {
            if (fork() == 0) {
                int e = one_connect(argv[3], atoi(argv[4]));
                unsigned char b = (unsigned char)e;
                if (write(pfd[1], &b, 1) != 1) _exit(1);
                _exit(0);
            }
        }
        int ok = 0, eagain = 0, other = 0;
        for (int i = 0; i < n; i++) {
            unsigned char b;
            if (read(pfd[0], &b, 1) != 1) break;
            if (b == 0) ok++; else if (b == EAGAIN) eagain++; else other++;
        }
        while (wait(NULL) > 0) {}
        printf("ok=%d\neagain=%d\nother=%d\n", ok, eagain, other);
        return 0;
    }
    if (argc < 4) return 2;
    const char *ip = argv[2];
    int port = atoi(argv[3]);
    struct sockaddr_in a;
    v4(&a, ip, port);
    errno = 0;
    int r = -1;
    if (!strcmp(cmd, "int80")) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        /* int 0x80 takes 32-bit pointers: put the address below 4 GiB. */
        void *low = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_32BIT, -1, 0);
        if (low == MAP_FAILED) { printf("errno=mmap\n"); return 1; }
        memcpy(low, &a, sizeof a);
        long ret;
        __asm__ volatile("int $0x80" : "=a"(ret) : "a"(362L), "b"((long)fd), "c"((long)(unsigned long)low), "d"((long)sizeof a) : "memory");
        r = ret < 0 ? -1 : 0;
        errno = ret < 0 ? (int)-ret : 0;
    } else if (!strcmp(cmd, "sendmsg") || !strcmp(cmd, "sendmmsg") || !strcmp(cmd, "sendto0")) {
        int fd = socket(AF_INET, SOCK_DGRAM, 0);
        struct iovec iov = {"hello", 5};
        if (!strcmp(cmd, "sendmsg")) {
            struct msghdr m = {0};
            m.msg_name = &a; m.msg_namelen = sizeof a; m.msg_iov = &iov; m.msg_iovlen = 1;
            r = sendmsg(fd, &m, 0) < 0 ? -1 : 0;
        } else if (!strcmp(cmd, "sendmmsg")) {
            struct sockaddr_in other;
            v4(&other, "127.0.0.2", 9);
            struct mmsghdr mm[2];
            memset(mm, 0, sizeof mm);
            mm[0].msg_hdr.msg_name = &other; mm[0].msg_hdr.msg_namelen = sizeof other;
            mm[0].msg_hdr.msg_iov = &iov; mm[0].msg_hdr.msg_iovlen = 1;
            mm[1].msg_hdr.msg_name = &a; mm[1].msg_hdr.msg_namelen = sizeof a;
            mm[1].msg_hdr.msg_iov = &iov; mm[1].msg_hdr.msg_iovlen = 1;
            int n = sendmmsg(fd, mm, 2, 0);
            printf("sent=%d\n", n);
            r = n == 2 ? 0 : -1;
            if (n >= 0 && n < 2) errno = 0;
        } else {
            a.sin_family = 0;
            r = sendto(fd, "hello", 5, 0, (struct sockaddr *)&a, sizeof a) < 0 ? -1 : 0;
        }
    } else if (!strcmp(cmd, "connect24")) {
        struct sockaddr_in6 s6;
        memset(&s6, 0, sizeof s6);
        s6.sin6_family = AF_INET6;
        s6.sin6_port = htons(port);
        inet_pton(AF_INET6, ip, &s6.sin6_addr);
        int fd = socket(AF_INET6, SOCK_STREAM, 0);
        r = connect(fd, (struct sockaddr *)&s6, 24);
    } else if (!strcmp(cmd, "sigconnect")) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_alarm; /* no SA_RESTART */
        sigaction(SIGALRM, &sa, NULL);
        struct itimerval it = {{0, 100000}, {0, 100000}};
        setitimer(ITIMER_REAL, &it, NULL);
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        r = connect(fd, (struct sockaddr *)&a, sizeof a);
        int cerr = r < 0 ? errno : 0;
        /* Go on as a program would after EINTR: the connection continues in the background. */
        ssize_t w = write(fd, "PING", 4);
        char buf[64] = {0};
        ssize_t n = w == 4 ? read(fd, buf, sizeof buf - 1) : -1;
        while (n < 0 && errno == EINTR) n = read(fd, buf, sizeof buf - 1);
        struct itimerval off = {{0, 0}, {0, 0}};
        setitimer(ITIMER_REAL, &off, NULL);
        printf("alarms=%d\nreply=%s\n", alarms, n > 0 ? buf : "");
        errno = cerr;
    } else {
        return 2;
    }
    printf("errno=%s\n", r < 0 ? ename(errno) : "0");
    return 0;
}
