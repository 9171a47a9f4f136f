/* udp_lazy: UDP sockets connected to a tailnet destination that send nothing (the "connect to
 * learn the source address" idiom, and musl's getaddrinfo sorting its answers that way), and
 * one that sends. Built with musl-gcc -static for the supervisor (tests/udp.rs).
 *   udp_lazy gai NAME          getaddrinfo(NAME, AF_UNSPEC, SOCK_DGRAM): rc=, n= (answers),
 *                              v6= (any IPv6 one)
 *   udp_lazy idle IP PORT N    one socket connected and closed (warm-up), prints pid=; after a
 *                              line on stdin connects N sockets (getsockname each) and holds
 *                              them: held=N; after a line closes them: closed=N; after a line
 *                              exits
 *   udp_lazy send IP PORT MSG  connect, getsockname, send MSG, the reply within 5 s:
 *                              port=, sent=, reply= (or recv=<errno name>), port_after=
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static const char *ename(int e) {
    switch (e) {
    case ECONNREFUSED: return "ECONNREFUSED";
    case ENETUNREACH: return "ENETUNREACH";
    case EAGAIN: return "EAGAIN";
    case EMFILE: return "EMFILE";
    default: return strerror(e);
    }
}

static int addr(const char *ip, int port, struct sockaddr_storage *ss, socklen_t *len) {
    struct sockaddr_in *s4 = (void *)ss;
    struct sockaddr_in6 *s6 = (void *)ss;
    memset(ss, 0, sizeof *ss);
    if (inet_pton(AF_INET, ip, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons(port);
        *len = sizeof *s4;
        return AF_INET;
    }
    if (inet_pton(AF_INET6, ip, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(port);
        *len = sizeof *s6;
        return AF_INET6;
    }
    return -1;
}

/* A socket connected to ip:port; its local port in *lport. -1 (errno set) on failure. */
static int connected(int fam, struct sockaddr_storage *ss, socklen_t len, int *lport) {
    int fd = socket(fam, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (connect(fd, (struct sockaddr *)ss, len) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    struct sockaddr_storage me;
    socklen_t ml = sizeof me;
    if (getsockname(fd, (struct sockaddr *)&me, &ml) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    *lport = ntohs(me.ss_family == AF_INET ? ((struct sockaddr_in *)&me)->sin_port : ((struct sockaddr_in6 *)&me)->sin6_port);
    return fd;
}

static void wait_line(void) {
    char b[64];
    if (!fgets(b, sizeof b, stdin)) exit(0);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 3 && !strcmp(argv[1], "gai")) {
        struct addrinfo h = {0}, *r = NULL;
        h.ai_family = AF_UNSPEC;
        h.ai_socktype = SOCK_DGRAM;
        int rc = getaddrinfo(argv[2], "4002", &h, &r);
        int n = 0, v6 = 0;
        for (struct addrinfo *p = r; p; p = p->ai_next) {
            n++;
            if (p->ai_family == AF_INET6) v6 = 1;
        }
        printf("rc=%d\nn=%d\nv6=%d\n", rc, n, v6);
        if (r) freeaddrinfo(r);
        return 0;
    }
    if (argc < 5) return 2;
    struct sockaddr_storage ss;
    socklen_t len;
    int fam = addr(argv[2], atoi(argv[3]), &ss, &len);
    if (fam < 0) return 2;
    if (!strcmp(argv[1], "idle")) {
        int n = atoi(argv[4]), lport = 0;
        if (n < 0 || n > 1000) return 2;
        int warm = connected(fam, &ss, len, &lport);
        printf("warm=%s\n", warm >= 0 && lport != 0 ? "ok" : ename(errno));
        if (warm >= 0) close(warm);
        printf("pid=%d\n", (int)getpid());
        wait_line();
        int *fds = calloc(n, sizeof *fds), held = 0, err = 0;
        for (int i = 0; i < n; i++) {
            fds[i] = connected(fam, &ss, len, &lport);
            if (fds[i] >= 0 && lport != 0) held++;
            else if (!err) err = errno;
        }
        printf("held=%d\n", held);
        if (err) printf("error=%s\n", ename(err));
        wait_line();
        for (int i = 0; i < n; i++)
            if (fds[i] >= 0) close(fds[i]);
        printf("closed=%d\n", n);
        wait_line();
        return 0;
    }
    if (!strcmp(argv[1], "send")) {
        int lport = 0, after = 0;
        int fd = connected(fam, &ss, len, &lport);
        if (fd < 0) {
            printf("connect=%s\n", ename(errno));
            return 1;
        }
        printf("port=%d\n", lport);
        struct timeval tv = {5, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        ssize_t k = send(fd, argv[4], strlen(argv[4]), 0);
        printf("sent=%s\n", k == (ssize_t)strlen(argv[4]) ? "ok" : ename(errno));
        char b[256];
        k = recv(fd, b, sizeof b - 1, 0);
        if (k >= 0) {
            b[k] = 0;
            printf("reply=%s\n", b);
        } else {
            printf("recv=%s\n", ename(errno));
        }
        struct sockaddr_storage me;
        socklen_t ml = sizeof me;
        if (getsockname(fd, (struct sockaddr *)&me, &ml) == 0)
            after = ntohs(me.ss_family == AF_INET ? ((struct sockaddr_in *)&me)->sin_port : ((struct sockaddr_in6 *)&me)->sin6_port);
        printf("port_after=%d\n", after);
        close(fd);
        return 0;
    }
    return 2;
}
