/* dns_sink: a UDP listener standing in for the system resolver, in a test's own network
 * namespace (where it may bind port 53). It answers nothing; it reports every datagram.
 *
 *   dns_sink PORT        bring lo up, bind 127.0.0.1:PORT, print "ready=1", then one line
 *                        "dgram=HEX" per datagram until a datagram "STOP" (or 30 s), then
 *                        "count=N" (STOP not counted)
 *   dns_sink stop PORT   send "STOP" to 127.0.0.1:PORT
 *
 * Datagrams on loopback are queued in the order they were sent, so everything a client sent
 * before the test's STOP is reported.
 */
#include "h_common.h"
#include <net/if.h>
#include <sys/ioctl.h>

static void lo_up(void) {
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct ifreq ifr = {0};
    strcpy(ifr.ifr_name, "lo");
    if (ioctl(s, SIOCGIFFLAGS, &ifr) == 0 && !(ifr.ifr_flags & IFF_UP)) {
        ifr.ifr_flags |= IFF_UP;
        if (ioctl(s, SIOCSIFFLAGS, &ifr) != 0) { printf("lo_up=%s\n", h_en(errno)); exit(1); }
    }
    close(s);
}

int main(int argc, char **argv) {
    int stop = argc == 3 && !strcmp(argv[1], "stop");
    if (argc != 2 && !stop) return 2;
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[argc - 1])) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (stop) return sendto(fd, "STOP", 4, 0, (struct sockaddr *)&a, sizeof a) == 4 ? 0 : 1;
    lo_up();
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0) { printf("bind=%s\n", h_en(errno)); return 1; }
    printf("ready=1\n");
    fflush(stdout);
    int count = 0;
    double deadline = h_now_ms() + 30000;
    for (;;) {
        int left = (int)(deadline - h_now_ms());
        struct pollfd p = { fd, POLLIN, 0 };
        if (left <= 0 || poll(&p, 1, left) != 1) break;
        unsigned char b[65536];
        ssize_t n = recv(fd, b, sizeof b, 0);
        if (n < 0) continue;
        if (n == 4 && !memcmp(b, "STOP", 4)) break;
        count++;
        printf("dgram=");
        for (ssize_t i = 0; i < n; i++) printf("%02x", b[i]);
        printf("\n");
        fflush(stdout);
    }
    printf("count=%d\n", count);
    return 0;
}
