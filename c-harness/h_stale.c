/* h_stale CLOSER NAME PORT PEERPORT NB: a nonblocking tailnet connect to NAME:PORT (its
 * handshake pending), closed behind the library's back (CLOSER = fclose: fclose(fdopen(s));
 * syscall: syscall(SYS_close, s)); a new socket gets the same fd and connects to
 * 127.0.0.1:PEERPORT (an HTTP server; NB=1 nonblocking + poll). Reports same_fd, connect2,
 * soerr, reply. */
#include "h_common.h"
#include <netinet/in.h>
#include <sys/syscall.h>

int main(int argc, char **argv) {
    if (argc != 6) return 1;
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct addrinfo *res = h_resolve(argv[2], argv[3], AF_INET);
    int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int rc = connect(s, res->ai_addr, res->ai_addrlen);
    printf("connect1=%s\n", rc ? h_en(errno) : "ok");
    /* Let the handshake get going (and, for a failing name, fail) before the hidden close. */
    struct pollfd p = { s, POLLOUT, 0 };
    poll(&p, 1, 100);
    if (!strcmp(argv[1], "fclose")) {
        FILE *f = fdopen(s, "r+");
        fclose(f);
    } else {
        syscall(SYS_close, s);
    }
    int nb = atoi(argv[5]);
    int t = socket(AF_INET, SOCK_STREAM | (nb ? SOCK_NONBLOCK : 0), 0);
    printf("same_fd=%d\n", t == s);
    struct sockaddr_in lo = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[4])), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    rc = connect(t, (struct sockaddr *)&lo, sizeof lo);
    int e = rc ? errno : 0;
    if (nb && rc && e == EINPROGRESS) {
        h_wait_out(t, 5000);
        e = h_soerr(t);
    }
    printf("connect2=%s\n", h_en(e));
    printf("soerr=%s\n", h_en(h_soerr(t)));
    if (send(t, H_GET, strlen(H_GET), MSG_NOSIGNAL) < 0) printf("send=%s\n", h_en(errno));
    h_reply(t, "reply");
    return 0;
}
