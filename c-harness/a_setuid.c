/* a_setuid: the setuid-root program of the adversarial tier (what sudo or su do with names:
 * resolve, connect), run in a chroot whose /etc/ld.so.preload loads libtsproxy.so.
 *   a_setuid HOSTILE-NAME TAILNET-NAME PORT
 * Resolves HOSTILE-NAME (a name with a newline: a log line would carry it), then fetches
 * http://TAILNET-NAME:PORT/ and prints secure=<AT_SECURE> euid= hostile=<gai result>
 * reply=<first line> or connect=<errno>.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 4) return 2;
    printf("secure=%lu\neuid=%d\n", getauxval(AT_SECURE), (int)geteuid());
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;
    int r = getaddrinfo(argv[1], "80", &hints, &res);
    printf("hostile=%s\n", r ? "fail" : "ok");
    if (r == 0) freeaddrinfo(res);
    r = getaddrinfo(argv[2], argv[3], &hints, &res);
    if (r) { printf("gai=%s\n", gai_strerror(r)); return 0; }
    int fd = socket(res->ai_family, SOCK_STREAM, 0);
    if (connect(fd, res->ai_addr, res->ai_addrlen)) { printf("connect=%d\n", errno); return 0; }
    if (send(fd, "GET / HTTP/1.0\r\n\r\n", 18, 0) != 18) return 1;
    char buf[512] = {0};
    size_t have = 0;
    struct pollfd p = {fd, POLLIN, 0};
    while (have < sizeof buf - 1 && poll(&p, 1, 3000) == 1) {
        ssize_t n = recv(fd, buf + have, sizeof buf - 1 - have, 0);
        if (n <= 0) break;
        have += n;
    }
    char *nl = strpbrk(buf, "\r\n");
    if (nl) *nl = 0;
    printf("reply=%s\n", buf);
    return 0;
}
