/* h_selfproxy: a process that listens on the proxy endpoint, then connects somewhere.
 *
 *   h_selfproxy MODE PROXYPORT HOST PORT
 *     listen   bind 127.0.0.1:PROXYPORT and listen
 *     wild     bind 0.0.0.0:PROXYPORT
 *     wild6    bind [::]:PROXYPORT (dual-stack)
 *     v6only   bind [::]:PROXYPORT with IPV6_V6ONLY (takes no IPv4 connection: not the proxy)
 *     inherit  fd 3 is a listening socket from the parent (socket activation)
 *     other    listen on another port (not the proxy)
 *     late     connect once first (no listener yet: tunnelled), then as "listen"
 * Then resolves HOST, connects (blocking) to HOST:PORT and reads one line.
 * Prints: listen=ok, connect=ok|ERRNO, reply=LINE, elapsed_ms=N.
 */
#include "h_common.h"
#include <netinet/in.h>

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc != 5)
        return 1;
    const char *mode = argv[1];
    int pport = atoi(argv[2]);
    int one = 1, l = -1;
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res;
    if (getaddrinfo(argv[3], argv[4], &hints, &res)) {
        printf("resolve=fail\n");
        return 1;
    }
    if (!strcmp(mode, "late")) {
        int s0 = socket(AF_INET, SOCK_STREAM, 0);
        int r0 = connect(s0, res->ai_addr, res->ai_addrlen);
        printf("pre_connect=%s\n", r0 == 0 ? "ok" : h_en(errno));
        close(s0);
        mode = "listen";
    }
    if (!strcmp(mode, "inherit")) {
        l = 3;
    } else if (!strcmp(mode, "wild6") || !strcmp(mode, "v6only")) {
        l = socket(AF_INET6, SOCK_STREAM, 0);
        int v6only = !strcmp(mode, "v6only");
        setsockopt(l, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only);
        struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons(pport), .sin6_addr = in6addr_any};
        setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(l, (void *)&a, sizeof a) || listen(l, 8)) {
            printf("listen=%s\n", h_en(errno));
            return 1;
        }
    } else {
        l = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(!strcmp(mode, "other") ? 0 : pport)};
        a.sin_addr.s_addr = htonl(!strcmp(mode, "wild") ? INADDR_ANY : INADDR_LOOPBACK);
        setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(l, (void *)&a, sizeof a) || listen(l, 8)) {
            printf("listen=%s\n", h_en(errno));
            return 1;
        }
    }
    printf("listen=ok\n");

    int s = socket(AF_INET, SOCK_STREAM, 0);
    double t0 = h_now_ms();
    int r = connect(s, res->ai_addr, res->ai_addrlen);
    int e = errno;
    printf("connect=%s\nelapsed_ms=%.0f\n", r == 0 ? "ok" : h_en(e), h_now_ms() - t0);
    if (r == 0) {
        char line[256] = "";
        struct timeval tv = {2, 0};
        setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        ssize_t n = recv(s, line, sizeof line - 1, 0);
        if (n > 0) {
            line[n] = 0;
            line[strcspn(line, "\r\n")] = 0;
        }
        printf("reply=%s\n", line);
    }
    return 0;
}
