/* h_panic HOST PORT LOPORT: (library built with test-panic, TSPROXY_TEST_PANIC=1) a
 * nonblocking connect to the tailnet HOST:PORT, where the library panics holding a table lock;
 * then a blocking connect to 127.0.0.1:LOPORT and a write to stderr. Reports connect,
 * loopback, stderr_write. */
#include "h_common.h"
#include <netinet/in.h>

int main(int argc, char **argv) {
    if (argc != 4) return 1;
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct addrinfo *res = h_resolve(argv[1], argv[2], AF_INET);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int rc = connect(fd, res->ai_addr, res->ai_addrlen);
    printf("connect=%s\n", rc ? h_en(errno) : "ok");
    close(fd);
    int t = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in lo = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[3])), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    printf("loopback=%s\n", connect(t, (struct sockaddr *)&lo, sizeof lo) ? h_en(errno) : "ok");
    close(t);
    printf("stderr_write=%zd\n", write(2, "stderr-alive\n", 13));
    return 0;
}
