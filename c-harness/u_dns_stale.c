/* u_dns_stale: the supervisor's DNS responder against another local user who binds the
 * address of a redirected socket the program has closed (tests/other_uid.rs).
 *
 *   u_dns_stale ask NAME...
 *       the program (built static, run under the supervisor): per NAME, a UDP socket
 *       connected to 192.0.2.53:53 (the supervisor redirects it to its responder), one A
 *       question, the reply, close; then one line is read from stdin before the next NAME.
 *       Prints "name=NAME rcode=N port=P" (rcode=none: no reply within 2 s; P: the socket's
 *       local port, the address the responder knows it by).
 *   u_dns_stale tcpask NAME...
 *       as ask, over TCP: connect(192.0.2.53:53) (redirected to the supervisor's TCP
 *       responder), the framed question, the framed reply (3 s at most). Prints
 *       "name=NAME rcode=N" (rcode=none: no reply).
 *   u_dns_stale flood PORT SECS
 *       the other user: connect to 127.0.0.1:PORT in a loop (nonblocking, sending nothing,
 *       at most 200 open, about one per millisecond) for SECS seconds. Prints connects=K.
 *   u_dns_stale squat PORT RESPONDER_PORT N
 *       the other user: bind 127.0.0.1:PORT, send N questions for distinct tailnet names to
 *       127.0.0.1:RESPONDER_PORT, one at a time, and count the replies. Prints bound=0|1 and
 *       replies=K, one a line.
 */
#include "h_common.h"
#include <sys/time.h>

static int question(unsigned char *q, const char *name, unsigned id) {
    unsigned char h[12] = {id >> 8, id & 0xff, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0};
    memcpy(q, h, 12);
    int n = 12;
    while (*name) {
        const char *dot = strchr(name, '.');
        int l = dot ? (int)(dot - name) : (int)strlen(name);
        q[n++] = (unsigned char)l;
        memcpy(q + n, name, l);
        n += l;
        name += l + (dot ? 1 : 0);
    }
    q[n++] = 0;
    q[n++] = 0, q[n++] = 1, q[n++] = 0, q[n++] = 1; /* A, IN */
    return n;
}

static int ask(int argc, char **argv) {
    for (int i = 2; i < argc; i++) {
        if (i > 2) {
            char line[16];
            if (!fgets(line, sizeof line, stdin)) return 1;
        }
        unsigned char q[300], r[512];
        int n = question(q, argv[i], 0x1234);
        int s = socket(AF_INET, SOCK_DGRAM, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(53)};
        inet_pton(AF_INET, "192.0.2.53", &sa.sin_addr);
        if (connect(s, (void *)&sa, sizeof sa)) {
            printf("name=%s connect=%s\n", argv[i], h_en(errno));
            return 1;
        }
        struct sockaddr_in me;
        socklen_t ml = sizeof me;
        getsockname(s, (void *)&me, &ml);
        struct timeval tv = {2, 0};
        setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        send(s, q, n, 0);
        int m = recv(s, r, sizeof r, 0);
        if (m >= 12)
            printf("name=%s rcode=%d port=%d\n", argv[i], r[3] & 15, ntohs(me.sin_port));
        else
            printf("name=%s rcode=none port=%d\n", argv[i], ntohs(me.sin_port));
        fflush(stdout);
        close(s);
    }
    return 0;
}

static int tcpask(int argc, char **argv) {
    for (int i = 2; i < argc; i++) {
        if (i > 2) {
            char line[16];
            if (!fgets(line, sizeof line, stdin)) return 1;
        }
        unsigned char q[302], r[514];
        int n = question(q + 2, argv[i], 0x4321);
        q[0] = n >> 8, q[1] = n & 0xff;
        int s = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(53)};
        inet_pton(AF_INET, "192.0.2.53", &sa.sin_addr);
        struct timeval tv = {3, 0};
        setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        int m = -1;
        if (connect(s, (void *)&sa, sizeof sa) == 0 && send(s, q, n + 2, 0) == n + 2) m = recv(s, r, sizeof r, MSG_WAITALL);
        if (m >= 14)
            printf("name=%s rcode=%d\n", argv[i], r[5] & 15);
        else
            printf("name=%s rcode=none\n", argv[i]);
        fflush(stdout);
        close(s);
    }
    return 0;
}

static int flood(int port, int secs) {
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
    int open_fds[200], k = 0, connects = 0;
    double end = h_now_ms() + secs * 1e3;
    while (h_now_ms() < end) {
        if (k == 200) {
            for (int i = 0; i < 200; i++) close(open_fds[i]);
            k = 0;
        }
        int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        if (s < 0) break;
        connect(s, (void *)&to, sizeof to);
        open_fds[k++] = s;
        connects++;
        usleep(1000);
    }
    printf("connects=%d\n", connects);
    return 0;
}

static int squat(int port, int resp, int count) {
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in me = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &me.sin_addr);
    if (bind(s, (void *)&me, sizeof me)) {
        printf("bound=0\nerrno=%s\n", h_en(errno));
        return 1;
    }
    struct sockaddr_in to = me;
    to.sin_port = htons(resp);
    int replies = 0, misses = 0;
    /* One question at a time, 100 ms for its reply: the responder's receive queue never
     * overflows, so a count of 0 means it answered nothing. Five questions in a row without
     * a reply end it (a responder that drops us is not asked 2100 times): at most
     * count * 100 ms, 500 ms when nothing answers. */
    for (int i = 0; i < count && misses < 5; i++) {
        char name[64];
        unsigned char q[300], r[512];
        snprintf(name, sizeof name, "squat%d.tail1234.ts.net", i);
        int n = question(q, name, i & 0xffff);
        sendto(s, q, n, 0, (void *)&to, sizeof to);
        struct pollfd p = {s, POLLIN, 0};
        if (poll(&p, 1, 100) == 1 && recv(s, r, sizeof r, 0) >= 12)
            replies++, misses = 0;
        else
            misses++;
    }
    printf("bound=1\nreplies=%d\n", replies);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 3 && !strcmp(argv[1], "ask")) return ask(argc, argv);
    if (argc >= 3 && !strcmp(argv[1], "tcpask")) return tcpask(argc, argv);
    if (argc == 4 && !strcmp(argv[1], "flood")) return flood(atoi(argv[2]), atoi(argv[3]));
    if (argc == 5 && !strcmp(argv[1], "squat")) return squat(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]));
    fprintf(stderr, "usage: u_dns_stale ask|tcpask NAME... | flood PORT SECS | squat PORT RESPONDER_PORT N\n");
    return 2;
}
