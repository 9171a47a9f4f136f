/* a_lib: libc entry points that may reach the kernel past the library's hooks (glibc
 * functions calling hidden internal aliases). Each mode does one thing, prints key=value.
 *
 *   a_lib rexec HOST PORT        rexec(3): glibc resolves HOST (internal getaddrinfo) and
 *                                   connects (internal __connect)
 *   a_lib rcmd HOST              rcmd(3) to port 514 (internal getaddrinfo first)
 *   a_lib ruserok HOST           ruserok(3) (internal getaddrinfo)
 *   a_lib gai NAME [idn]         getaddrinfo AF_INET (idn: AI_IDN, C.UTF-8 locale)
 *   a_lib ghbn NAME              gethostbyname
 *   a_lib gni IP                 getnameinfo(NI_NAMEREQD) of IP (a PTR lookup)
 *   a_lib gha IP                 gethostbyaddr of IP
 *   a_lib KIND_dns SERVER NAME   UDP socket connected to SERVER:53, then one A question for
 *                                   NAME written by KIND: write, stdio (fdopen+fwrite+fflush),
 *                                   pwritev2 (offset -1), aio (aio_write), uwrite (__write),
 *                                   usend (__send)
 *   a_lib tcp_KIND_dns SERVER NAME   the same over TCP (length-prefixed); tcp_mmsgtfo_dns:
 *                                   no connect, sendmmsg(MSG_FASTOPEN) to SERVER:53
 *   a_lib uconnect IP PORT       TCP connect through glibc's exported __connect
 *   a_lib sysconnect IP PORT     TCP connect through syscall(SYS_connect)
 *   a_lib mmsgtfo IP PORT        TCP sendmmsg(MSG_FASTOPEN) of one message to IP:PORT
 */
#include "h_common.h"
#include <aio.h>
#include <arpa/nameser.h>
#include <fcntl.h>
#include <locale.h>
#include <resolv.h>
#include <sys/syscall.h>
#include <sys/uio.h>

extern int __connect(int, const struct sockaddr *, socklen_t);
extern ssize_t __send(int, const void *, size_t, int);
extern ssize_t __write(int, const void *, size_t);

static int wait_reply(int fd) {
    struct pollfd p = {fd, POLLIN, 0};
    int r = poll(&p, 1, 1500);
    if (r == 1) {
        unsigned char b[512];
        ssize_t n = recv(fd, b, sizeof b, MSG_DONTWAIT);
        printf("reply=%zd\n", n);
    } else {
        printf("reply=none\n");
    }
    return 0;
}

static int dns(const char *kind, const char *server, const char *name, int tcp) {
    unsigned char q[600];
    int n = res_mkquery(QUERY, name, C_IN, T_A, NULL, 0, NULL, q + 2, sizeof q - 2);
    if (n < 0) { printf("mkquery=fail\n"); return 1; }
    q[0] = n >> 8;
    q[1] = n & 0xff;
    unsigned char *buf = tcp ? q : q + 2;
    size_t len = tcp ? (size_t)n + 2 : (size_t)n;
    int fd = socket(AF_INET, tcp ? SOCK_STREAM : SOCK_DGRAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(53)};
    inet_pton(AF_INET, server, &a.sin_addr);
    ssize_t w = -1;
    if (!strcmp(kind, "mmsgtfo")) {
        /* no connect: TCP Fast Open through sendmmsg's flags */
        struct iovec v = {buf, len};
        struct mmsghdr mm = {.msg_hdr = {.msg_name = &a, .msg_namelen = sizeof a, .msg_iov = &v, .msg_iovlen = 1}};
        errno = 0;
        w = sendmmsg(fd, &mm, 1, MSG_FASTOPEN) == 1 ? (ssize_t)mm.msg_len : -1;
        printf("sent=%zd\nerrno=%s\n", w, w < 0 ? h_en(errno) : "0");
        return wait_reply(fd);
    }
    if (connect(fd, (struct sockaddr *)&a, sizeof a)) { printf("connect=%s\n", h_en(errno)); return 1; }
    errno = 0;
    if (!strcmp(kind, "write")) {
        w = write(fd, buf, len);
    } else if (!strcmp(kind, "stdio")) {
        FILE *f = fdopen(fd, "w");
        setvbuf(f, NULL, _IOFBF, 4096);
        size_t k = fwrite(buf, 1, len, f);
        w = fflush(f) == 0 ? (ssize_t)k : -1;
        fd = dup(fileno(f));
    } else if (!strcmp(kind, "pwritev2")) {
        struct iovec v = {buf, len};
        w = pwritev2(fd, &v, 1, -1, 0);
    } else if (!strcmp(kind, "aio")) {
        struct aiocb cb;
        memset(&cb, 0, sizeof cb);
        cb.aio_fildes = fd;
        cb.aio_buf = buf;
        cb.aio_nbytes = len;
        if (aio_write(&cb)) { printf("aio=%s\n", h_en(errno)); return 1; }
        const struct aiocb *l[1] = {&cb};
        struct timespec t = {3, 0};
        aio_suspend(l, 1, &t);
        int e = aio_error(&cb);
        w = aio_return(&cb);
        errno = e;
    } else if (!strcmp(kind, "uwrite")) {
        w = __write(fd, buf, len);
    } else if (!strcmp(kind, "usend")) {
        w = __send(fd, buf, len, 0);
    } else {
        printf("bad=%s\n", kind);
        return 2;
    }
    printf("sent=%zd\nerrno=%s\n", w, w < 0 ? h_en(errno) : "0");
    fflush(stdout);
    return wait_reply(fd);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 3) { fprintf(stderr, "usage: see the head of hunt_lib.c\n"); return 2; }
    const char *m = argv[1];
    if (!strcmp(m, "rexec") && argc > 3) {
        char *host = argv[2];
        errno = 0;
        int fd = rexec(&host, htons(atoi(argv[3])), "nobody", "x", "true", NULL);
        printf("fd=%d\nerrno=%s\n", fd, fd < 0 ? h_en(errno) : "0");
        return 0;
    }
    if (!strcmp(m, "rcmd")) {
        char *host = argv[2];
        errno = 0;
        int fd = rcmd(&host, htons(514), "nobody", "nobody", "true", NULL);
        printf("fd=%d\nerrno=%s\n", fd, fd < 0 ? h_en(errno) : "0");
        return 0;
    }
    if (!strcmp(m, "ruserok")) {
        int r = ruserok(argv[2], 0, "nobody", "nobody");
        printf("ruserok=%d\n", r);
        return 0;
    }
    if (!strcmp(m, "gai")) {
        struct addrinfo h = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res;
        if (argc > 3 && !strcmp(argv[3], "idn")) {
            setlocale(LC_ALL, "C.UTF-8");
            h.ai_flags |= AI_IDN | AI_CANONNAME;
        }
        int r = getaddrinfo(argv[2], "80", &h, &res);
        if (r) { printf("gai=%s\n", gai_strerror(r)); return 0; }
        char ip[64];
        inet_ntop(AF_INET, &((struct sockaddr_in *)res->ai_addr)->sin_addr, ip, sizeof ip);
        printf("gai=0\naddr=%s\ncanon=%s\n", ip, res->ai_canonname ? res->ai_canonname : "");
        return 0;
    }
    if (!strcmp(m, "ghbn")) {
        struct hostent *h = gethostbyname(argv[2]);
        if (!h) { printf("ghbn=%d\n", h_errno); return 0; }
        char ip[64];
        inet_ntop(AF_INET, h->h_addr_list[0], ip, sizeof ip);
        printf("ghbn=0\naddr=%s\nname=%s\n", ip, h->h_name);
        return 0;
    }
    if (!strcmp(m, "gni")) {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(80)};
        inet_pton(AF_INET, argv[2], &a.sin_addr);
        char host[256];
        int r = getnameinfo((struct sockaddr *)&a, sizeof a, host, sizeof host, NULL, 0, NI_NAMEREQD);
        printf("gni=%s\nhost=%s\n", r ? gai_strerror(r) : "0", r ? "" : host);
        return 0;
    }
    if (!strcmp(m, "gha")) {
        struct in_addr a;
        inet_pton(AF_INET, argv[2], &a);
        struct hostent *h = gethostbyaddr(&a, sizeof a, AF_INET);
        printf("gha=%d\nname=%s\n", h ? 0 : h_errno, h ? h->h_name : "");
        return 0;
    }
    if (!strcmp(m, "uconnect") && argc > 3) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[3]))};
        inet_pton(AF_INET, argv[2], &a.sin_addr);
        int r = __connect(fd, (struct sockaddr *)&a, sizeof a);
        printf("errno=%s\n", r ? h_en(errno) : "0");
        return 0;
    }
    if ((!strcmp(m, "sysconnect") || !strcmp(m, "mmsgtfo")) && argc > 3) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[3]))};
        inet_pton(AF_INET, argv[2], &a.sin_addr);
        long r;
        if (!strcmp(m, "sysconnect")) {
            r = syscall(SYS_connect, fd, &a, sizeof a);
        } else {
            static char get[] = "GET / HTTP/1.0\r\n\r\n";
            struct iovec v = {get, sizeof get - 1};
            struct mmsghdr mm = {.msg_hdr = {.msg_name = &a, .msg_namelen = sizeof a, .msg_iov = &v, .msg_iovlen = 1}};
            r = sendmmsg(fd, &mm, 1, MSG_FASTOPEN);
            r = r == 1 ? 0 : -1;
        }
        printf("errno=%s\n", r ? h_en(errno) : "0");
        if (!r) {
            char b[64] = {0};
            struct pollfd p = {fd, POLLIN, 0};
            if (poll(&p, 1, 3000) == 1 && recv(fd, b, sizeof b - 1, 0) > 0) printf("reply=%.15s\n", b);
        }
        return 0;
    }
    size_t ml = strlen(m);
    if (ml > 4 && !strcmp(m + ml - 4, "_dns") && argc > 3) {
        char kind[32];
        int tcp = !strncmp(m, "tcp_", 4);
        snprintf(kind, sizeof kind, "%.*s", (int)(ml - 4 - (tcp ? 4 : 0)), m + (tcp ? 4 : 0));
        return dns(kind, argv[2], argv[3], tcp);
    }
    printf("bad=%s\n", m);
    return 2;
}
