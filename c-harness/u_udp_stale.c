/* u_udp_stale: the supervisor's UDP relay against another local user who binds the address of
 * a relayed socket the program has closed (tests/udp.rs).
 *
 *   u_udp_stale hold IP PORT
 *       the program (static, under the supervisor): a UDP socket connected to IP:PORT (a
 *       tailnet echo peer; the supervisor connects it to a loopback socket of its own, `near`,
 *       and relays), one datagram and its echo. Prints echo=TEXT, local=PORT (its own port)
 *       and near=PORT (getpeername: the loopback socket), then waits for a line on stdin,
 *       closes the socket, prints closed=1, and waits for another line before it exits.
 *   u_udp_stale squat PORT NEAR
 *       the other user: bind 127.0.0.1:PORT, connect to 127.0.0.1:NEAR, send one datagram,
 *       wait 3 s for an answer. Prints bound=0|1 and reply=TEXT or reply=none.
 */
#include "h_common.h"
#include <sys/time.h>

static int hold(const char *ip, int port) {
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, ip, &sa.sin_addr);
    if (connect(s, (void *)&sa, sizeof sa)) {
        printf("connect=%s\n", h_en(errno));
        return 1;
    }
    struct timeval tv = {5, 0};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char b[200];
    send(s, "victim-hello", 12, 0);
    int n = recv(s, b, sizeof b - 1, 0);
    struct sockaddr_in me, peer;
    socklen_t ml = sizeof me, pl = sizeof peer;
    getsockname(s, (void *)&me, &ml);
    getpeername(s, (void *)&peer, &pl);
    printf("echo=%.*s\nlocal=%d\nnear=%d\n", n > 0 ? n : 0, b, ntohs(me.sin_port), ntohs(peer.sin_port));
    fflush(stdout);
    if (!fgets(b, sizeof b, stdin)) return 1;
    close(s);
    printf("closed=1\n");
    fflush(stdout);
    if (!fgets(b, sizeof b, stdin)) return 1;
    return 0;
}

static int squat(int port, int near) {
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in me = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &me.sin_addr);
    if (bind(s, (void *)&me, sizeof me)) {
        printf("bound=0\nerrno=%s\nreply=none\n", h_en(errno));
        return 0;
    }
    struct sockaddr_in to = me;
    to.sin_port = htons(near);
    connect(s, (void *)&to, sizeof to);
    send(s, "other-user", 10, 0);
    char b[200];
    struct pollfd p = {s, POLLIN, 0};
    int n = poll(&p, 1, 3000) == 1 ? (int)recv(s, b, sizeof b - 1, 0) : -1;
    if (n > 0)
        printf("bound=1\nreply=%.*s\n", n, b);
    else
        printf("bound=1\nreply=none\n");
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[1], "hold")) return hold(argv[2], atoi(argv[3]));
    if (argc == 4 && !strcmp(argv[1], "squat")) return squat(atoi(argv[2]), atoi(argv[3]));
    fprintf(stderr, "usage: u_udp_stale hold IP PORT | squat PORT NEAR\n");
    return 2;
}
