/* A DNS meter: the system resolver of a test namespace. It listens on 127.0.0.1:53 (UDP and
 * TCP), runs a command (with LD_PRELOAD=$METER_PRELOAD when set: the meter itself is never
 * preloaded, so what it counts does not depend on the library under test), answers every
 * question it receives and, when the command has exited, prints every question it saw:
 *
 *   meter_queries=N
 *   meter_names=name/type,name/type,...
 *
 * Answers: a name whose first label starts with "nx" -> NXDOMAIN; type A -> 192.0.2.7 (TEST-NET-1,
 * so a test can tell the meter's answer from a tailnet placeholder); anything else -> NOERROR
 * without data. Bounded: the command is killed after METER_TIMEOUT seconds (default 20).
 *
 * Run it in a user + network + mount namespace whose /etc/resolv.conf says
 * "nameserver 127.0.0.1" (see tests/resolver_apis.rs).
 *
 * usage: dns_meter CMD [ARGS...]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char seen[65536];
static size_t seen_len;
static int queries;

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

/* Answer query q (n bytes) into out; returns the answer length, or 0 to drop it. */
static int answer(const unsigned char *q, int n, unsigned char *out, int cap) {
    if (n < 12 || cap < n + 16)
        return 0;
    int i = 12;
    char name[300];
    size_t nl = 0;
    while (i < n && q[i] != 0) {
        int l = q[i];
        if (l > 63 || i + 1 + l > n || nl + l + 2 > sizeof name)
            return 0;
        if (nl)
            name[nl++] = '.';
        memcpy(name + nl, q + i + 1, l);
        nl += l;
        i += 1 + l;
    }
    name[nl] = 0;
    if (i + 5 > n)
        return 0;
    int qtype = q[i + 1] << 8 | q[i + 2];
    int qend = i + 5;
    queries++;
    seen_len += snprintf(seen + seen_len, sizeof seen - seen_len, "%s%s/%d", seen_len ? "," : "", name, qtype);
    if (seen_len >= sizeof seen)
        seen_len = sizeof seen - 1;

    memcpy(out, q, qend);
    out[2] = 0x80 | (q[2] & 0x01); /* QR, RD as asked */
    out[3] = 0x80;                 /* RA, NOERROR */
    out[4] = 0, out[5] = 1;        /* QDCOUNT */
    memset(out + 6, 0, 6);         /* AN, NS, AR */
    if (strncmp(name, "nx", 2) == 0) {
        out[3] |= 3; /* NXDOMAIN */
        return qend;
    }
    if (qtype != 1)
        return qend;
    out[7] = 1;
    unsigned char rr[] = {0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 7};
    memcpy(out + qend, rr, sizeof rr);
    return qend + sizeof rr;
}

static void tcp_client(int c) {
    struct timeval tv = {2, 0};
    setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    for (int k = 0; k < 4; k++) {
        unsigned char len[2], q[4096], out[4200];
        if (recv(c, len, 2, MSG_WAITALL) != 2)
            break;
        int n = len[0] << 8 | len[1];
        if (n > (int)sizeof q || recv(c, q, n, MSG_WAITALL) != n)
            break;
        int a = answer(q, n, out + 2, sizeof out - 2);
        if (a <= 0)
            break;
        out[0] = a >> 8, out[1] = a & 0xff;
        if (send(c, out, a + 2, MSG_NOSIGNAL) != a + 2)
            break;
    }
    close(c);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: dns_meter CMD [ARGS...]\n");
        return 2;
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(53), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int u = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    int t = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(t, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (u < 0 || t < 0 || bind(u, (void *)&sa, sizeof sa) || bind(t, (void *)&sa, sizeof sa) || listen(t, 16)) {
        printf("meter_error=bind %s\n", strerror(errno));
        return 3;
    }
    double limit = getenv("METER_TIMEOUT") ? atof(getenv("METER_TIMEOUT")) : 20;
    fflush(stdout);
    pid_t child = fork();
    if (child == 0) {
        const char *pre = getenv("METER_PRELOAD");
        if (pre && *pre)
            setenv("LD_PRELOAD", pre, 1);
        execvp(argv[1], argv + 1);
        _exit(127);
    }
    double start = now_s();
    int status = 0, done = 0;
    while (!done) {
        struct pollfd p[2] = {{u, POLLIN, 0}, {t, POLLIN, 0}};
        poll(p, 2, 20);
        if (p[0].revents & POLLIN) {
            unsigned char q[4096], out[4200];
            struct sockaddr_in from;
            socklen_t fl = sizeof from;
            int n = recvfrom(u, q, sizeof q, 0, (void *)&from, &fl);
            int a = n > 0 ? answer(q, n, out, sizeof out) : 0;
            if (a > 0)
                sendto(u, out, a, 0, (void *)&from, fl);
        }
        if (p[1].revents & POLLIN) {
            int c = accept4(t, NULL, NULL, SOCK_CLOEXEC);
            if (c >= 0)
                tcp_client(c);
        }
        if (waitpid(child, &status, WNOHANG) == child)
            done = 1;
        else if (now_s() - start > limit) {
            kill(child, SIGKILL);
            waitpid(child, &status, 0);
            printf("meter_timeout=1\n");
            done = 1;
        }
    }
    /* Questions still queued (sent by a thread the command abandoned at exit) count too. */
    for (int k = 0; k < 1000; k++) {
        unsigned char q[4096], out[4200];
        int n = recv(u, q, sizeof q, MSG_DONTWAIT);
        if (n <= 0)
            break;
        answer(q, n, out, sizeof out);
    }
    printf("meter_queries=%d\nmeter_names=%s\n", queries, seen);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
