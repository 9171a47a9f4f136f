/* sup_socks PORT MAX: a minimal SOCKS5 server, linked -static for the supervisor's self-proxy
 * test (a static proxy run under the launcher with itself as the configured proxy).
 *
 * Listens on 127.0.0.1:PORT (prints listen=ok). One thread per connection: no-auth greeting,
 * CONNECT with ATYP 1 (IPv4), 3 (a name, resolved with getaddrinfo) or 4 (IPv6); dials the
 * destination itself with connect(2), answers (0 ok, 5 refused, 1 otherwise) and relays for
 * at most 5 s. Prints dial=OK|ERRNO per CONNECT.
 * Bounded: stops accepting after MAX connections (a fan-out through itself ends there), and
 * exits when stdin closes or after 20 s. At exit prints accepted=N.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int readn(int fd, void *b, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)b + got, n - got);
        if (r <= 0)
            return -1;
        got += r;
    }
    return 0;
}

static const char *en(int e) {
    switch (e) {
    case 0: return "OK";
    case ECONNREFUSED: return "ECONNREFUSED";
    case ENETUNREACH: return "ENETUNREACH";
    case ETIMEDOUT: return "ETIMEDOUT";
    case EAGAIN: return "EAGAIN";
    default: { static __thread char b[32]; snprintf(b, sizeof b, "E%d", e); return b; }
    }
}

static void *serve(void *arg) {
    int c = (int)(long)arg;
    unsigned char h[262];
    struct sockaddr_storage ss;
    socklen_t sl = 0;
    int s = -1, e = 0;
    struct timeval tv = {5, 0};
    setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (readn(c, h, 2) || readn(c, h + 2, h[1]) || write(c, "\x05\x00", 2) != 2 || readn(c, h, 4) || h[0] != 5 || h[1] != 1)
        goto out;
    memset(&ss, 0, sizeof ss);
    if (h[3] == 1 || h[3] == 4) {
        int v6 = h[3] == 4;
        unsigned char a[18];
        if (readn(c, a, v6 ? 18 : 6))
            goto out;
        if (v6) {
            struct sockaddr_in6 *s6 = (void *)&ss;
            s6->sin6_family = AF_INET6;
            memcpy(&s6->sin6_addr, a, 16);
            memcpy(&s6->sin6_port, a + 16, 2);
            sl = sizeof *s6;
        } else {
            struct sockaddr_in *s4 = (void *)&ss;
            s4->sin_family = AF_INET;
            memcpy(&s4->sin_addr, a, 4);
            memcpy(&s4->sin_port, a + 4, 2);
            sl = sizeof *s4;
        }
    } else if (h[3] == 3) {
        unsigned char n;
        char name[256], port[8];
        unsigned char p[2];
        if (readn(c, &n, 1) || readn(c, name, n) || readn(c, p, 2))
            goto out;
        name[n] = 0;
        snprintf(port, sizeof port, "%u", p[0] << 8 | p[1]);
        struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
        if (getaddrinfo(name, port, &hints, &res)) {
            e = EHOSTUNREACH;
        } else {
            memcpy(&ss, res->ai_addr, res->ai_addrlen);
            sl = res->ai_addrlen;
            freeaddrinfo(res);
        }
    } else {
        goto out;
    }
    if (sl) {
        s = socket(ss.ss_family, SOCK_STREAM, 0);
        if (connect(s, (void *)&ss, sl))
            e = errno;
    }
    printf("dial=%s\n", en(e));
    unsigned char rep[10] = {5, e == 0 ? 0 : e == ECONNREFUSED ? 5 : 1, 0, 1};
    if (write(c, rep, sizeof rep) != sizeof rep || e)
        goto out;
    struct pollfd pf[2] = {{c, POLLIN, 0}, {s, POLLIN, 0}};
    char buf[4096];
    while (poll(pf, 2, 5000) > 0) {
        int from = (pf[0].revents & (POLLIN | POLLHUP)) ? 0 : 1;
        ssize_t r = read(pf[from].fd, buf, sizeof buf);
        if (r <= 0 || write(pf[1 - from].fd, buf, r) != r)
            break;
    }
out:
    if (s >= 0)
        close(s);
    close(c);
    return NULL;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc != 3)
        return 2;
    int max = atoi(argv[2]), one = 1, accepted = 0;
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1])), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(l, (void *)&a, sizeof a) || listen(l, 64)) {
        printf("listen=%s\n", en(errno));
        return 1;
    }
    printf("listen=ok\n");
    time_t end = time(NULL) + 20;
    struct pollfd pf[2] = {{l, POLLIN, 0}, {0, POLLIN, 0}};
    while (accepted < max && time(NULL) < end) {
        if (poll(pf, 2, 200) <= 0)
            continue;
        if (pf[1].revents) {
            char b[64];
            if (read(0, b, sizeof b) <= 0)
                break; /* stdin closed: done */
        }
        if (pf[0].revents & POLLIN) {
            int c = accept(l, NULL, NULL);
            if (c < 0)
                continue;
            accepted++;
            pthread_t t;
            pthread_attr_t at;
            pthread_attr_init(&at);
            pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
            pthread_attr_setstacksize(&at, 64 << 10);
            if (pthread_create(&t, &at, serve, (void *)(long)c))
                close(c);
        }
    }
    printf("accepted=%d\n", accepted);
    fflush(stdout);
    _exit(0);
}
