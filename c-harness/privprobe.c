/* privprobe: what a setuid/setcap program sees of its privileges and of tsproxy.
 *
 *   privprobe [IP PORT]
 *
 * Prints secure=AT_SECURE, euid=, preloaded=1 when libtsproxy.so is mapped, raw= (a raw ICMP
 * socket: "ok" with CAP_NET_RAW, else the errno), and with IP PORT, sendto= of a one-byte UDP
 * datagram to IP:PORT.
 */
#include "h_common.h"
#include <netinet/in.h>
#include <sys/auxv.h>

int main(int argc, char **argv) {
    printf("secure=%lu\neuid=%u\n", getauxval(AT_SECURE), (unsigned)geteuid());
    int pre = 0;
    FILE *m = fopen("/proc/self/maps", "r");
    char line[512];
    while (m && fgets(line, sizeof line, m)) pre |= strstr(line, "libtsproxy") != NULL;
    if (m) fclose(m);
    printf("preloaded=%d\n", pre);
    int r = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
    printf("raw=%s\n", r >= 0 ? "ok" : (errno == EPERM ? "EPERM" : h_en(errno)));
    if (r >= 0) close(r);
    if (argc == 3) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[2])) };
        inet_pton(AF_INET, argv[1], &a.sin_addr);
        int fd = socket(AF_INET, SOCK_DGRAM, 0);
        ssize_t n = sendto(fd, "x", 1, 0, (struct sockaddr *)&a, sizeof a);
        printf("sendto=%s\n", n == 1 ? "ok" : h_en(errno));
    }
    return 0;
}
