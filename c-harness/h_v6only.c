/* h_v6only ADDR6 PORT: an AF_INET6 socket with IPV6_V6ONLY=1, nonblocking connect to the
 * tailnet [ADDR6]:PORT through a proxy on [::1] that fails the handshake; reports connect,
 * events, soerr. */
#include "h_common.h"
#include <netinet/in.h>

int main(int argc, char **argv) {
    if (argc != 3) return 1;
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct sockaddr_in6 dst = { .sin6_family = AF_INET6, .sin6_port = htons(atoi(argv[2])) };
    if (inet_pton(AF_INET6, argv[1], &dst.sin6_addr) != 1) return 1;
    int fd = socket(AF_INET6, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    int rc = connect(fd, (struct sockaddr *)&dst, sizeof dst);
    int e = rc ? errno : 0;
    printf("connect=%s\n", h_en(e));
    if (e == EINPROGRESS) {
        printf("events=0x%x\n", h_wait_out(fd, 5000));
        printf("soerr=%s\n", h_en(h_soerr(fd)));
    }
    return 0;
}
