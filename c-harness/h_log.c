/* h_log MODE ...:
 *   fd2 FILE HOST PORT   close stderr, open FILE (gets fd 2), write "DATA\n", connect to the
 *                        tailnet HOST:PORT (the proxy is down: an error is logged), write "END\n"
 *   plain HOST PORT      just the failing connect (for TSPROXY_LOG_FILE checks)
 *   longname             getaddrinfo of a >255-byte name ending in .ts.net, then a connect to
 *                        whatever it gave
 * Reports fd, connect, gai (on stdout). */
#include "h_common.h"
#include <fcntl.h>

static void try_connect(const char *host, const char *port) {
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res;
    int r = getaddrinfo(host, port, &hints, &res);
    printf("gai=%d\n", r);
    if (r) return;
    int s = socket(res->ai_family, SOCK_STREAM, 0);
    printf("connect=%s\n", connect(s, res->ai_addr, res->ai_addrlen) ? h_en(errno) : "ok");
    close(s);
    freeaddrinfo(res);
}

int main(int argc, char **argv) {
    if (argc < 2) return 1;
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (!strcmp(argv[1], "fd2") && argc == 5) {
        close(2);
        int fd = open(argv[2], O_RDWR | O_CREAT | O_TRUNC, 0600);
        printf("fd=%d\n", fd);
        if (write(fd, "DATA\n", 5) != 5) return 1;
        try_connect(argv[3], argv[4]);
        if (write(fd, "END\n", 4) != 4) return 1;
        close(fd);
        return 0;
    }
    if (!strcmp(argv[1], "plain") && argc == 4) {
        try_connect(argv[2], argv[3]);
        return 0;
    }
    if (!strcmp(argv[1], "longname")) {
        char name[400] = "";
        while (strlen(name) < 300) strcat(name, "longlabel-abcdefghijklmnopqrstuvwxyz-0123456789.");
        strcat(name, "tail1234.ts.net");
        printf("namelen=%zu\n", strlen(name));
        try_connect(name, "80");
        return 0;
    }
    return 1;
}
