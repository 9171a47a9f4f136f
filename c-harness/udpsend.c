/* udpsend: send one datagram with sendto(), connect(), and one with send(); print each errno.
 *   udpsend IP PORT
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

int main(int argc, char **argv) {
    if (argc != 3) return 1;
    struct sockaddr_storage ss = {0};
    socklen_t len;
    struct sockaddr_in *s4 = (void *)&ss;
    struct sockaddr_in6 *s6 = (void *)&ss;
    int fam;
    if (inet_pton(AF_INET, argv[1], &s4->sin_addr) == 1) { fam = AF_INET; s4->sin_family = AF_INET; s4->sin_port = htons(atoi(argv[2])); len = sizeof *s4; }
    else if (inet_pton(AF_INET6, argv[1], &s6->sin6_addr) == 1) { fam = AF_INET6; s6->sin6_family = AF_INET6; s6->sin6_port = htons(atoi(argv[2])); len = sizeof *s6; }
    else return 1;
    int fd = socket(fam, SOCK_DGRAM, 0);
    ssize_t n = sendto(fd, "x", 1, 0, (struct sockaddr *)&ss, len);
    printf("sendto=%s\n", n == 1 ? "ok" : (errno == ENETUNREACH ? "ENETUNREACH" : strerror(errno)));
    int rc = connect(fd, (struct sockaddr *)&ss, len);
    printf("connect=%s\n", rc == 0 ? "ok" : (errno == ENETUNREACH ? "ENETUNREACH" : strerror(errno)));
    n = rc == 0 ? send(fd, "y", 1, 0) : -1;
    printf("send=%s\n", n == 1 ? "ok" : rc != 0 ? "-" : (errno == ENETUNREACH ? "ENETUNREACH" : strerror(errno)));
    return 0;
}
