/* r_dns: adversarial checks of DNS spoken by a program itself (src/dns/wire.rs, wire_tcp.rs).
 * Run in its own network namespace (unshare -r -n): it brings lo up and may play the DNS
 * server on 127.0.0.1:53 itself (its server sockets are plain listeners the library leaves
 * alone). Prints key=value lines.
 *
 *   r_dns dup_udp NAME       connect a UDP socket to 127.0.0.1:53, dup() it, send a query for
 *                            NAME on the duplicate: server_got=0|1 (did 127.0.0.1:53 get it)
 *   r_dns tcp_pipe N1 N2     TCP to 127.0.0.1:53, one write of two framed queries (N1 then
 *                            N2): server_saw_N1=0|1 server_saw_N2=0|1, answers=K (before EOF)
 *   r_dns tcp_split NAME     TCP to 127.0.0.1:53, the framed query written in two parts split
 *                            inside the header: server_saw=0|1
 *   r_dns restart PORT       a UDP socket connected to 127.0.0.1:PORT, SIGALRM (SA_RESTART)
 *                            every 50 ms while recv() blocks; at 300 ms a thread sends a
 *                            query for peer-1 on it (PORT 53: answered by tsproxy) or, for
 *                            another PORT, a peer there sends a datagram: recv=N errno=E
 *   r_dns blocked            a thread blocks in recvfrom() on an unconnected UDP socket, then
 *                            the main thread sends it a query for peer-1 to 127.0.0.1:53:
 *                            from=ADDR (who the answer is reported to come from)
 *   r_dns inj_dup2 [keep]    a tailnet query answered (the injector made), then the program
 *                            dup2()s one end of its own TCP connection onto every descriptor
 *                            it did not open itself (unless "keep"), then asks again:
 *                            tcp_stream_got=N (bytes that appeared in its TCP stream)
 *   r_dns race N             two threads send N tailnet queries each and one thread N public
 *                            queries on one connected UDP socket to 127.0.0.1:53:
 *                            public_sent public_got answers_got
 */
#define _GNU_SOURCE
#include "h_common.h"
#include <fcntl.h>
#include <net/if.h>
#include <pthread.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>

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

/* A DNS query: 12-byte header, one question NAME (dotted) of QTYPE, class IN. */
static int query(unsigned char *b, int id, const char *name, int qtype) {
    memset(b, 0, 12);
    b[0] = id >> 8; b[1] = id; b[2] = 1; /* RD */ b[5] = 1; /* QDCOUNT */
    int n = 12;
    const char *p = name;
    while (*p) {
        const char *dot = strchr(p, '.');
        int l = dot ? (int)(dot - p) : (int)strlen(p);
        b[n++] = l;
        memcpy(b + n, p, l);
        n += l;
        p += l;
        if (*p == '.') p++;
    }
    b[n++] = 0;
    b[n++] = qtype >> 8; b[n++] = qtype; b[n++] = 0; b[n++] = 1;
    return n;
}

static struct sockaddr_in lo(int port) {
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

/* Does BUF hold the first label of NAME as a DNS label? */
static int has_label(const unsigned char *buf, size_t n, const char *name) {
    char lab[64];
    size_t l = strcspn(name, ".");
    lab[0] = (char)l;
    memcpy(lab + 1, name, l);
    return memmem(buf, n, lab, l + 1) != NULL;
}

/* Read what arrives on FD for MS milliseconds (or to EOF) into BUF. */
static size_t drain(int fd, unsigned char *buf, size_t cap, int ms) {
    size_t have = 0;
    double end = h_now_ms() + ms;
    for (;;) {
        int left = (int)(end - h_now_ms());
        struct pollfd p = { fd, POLLIN, 0 };
        if (left <= 0 || poll(&p, 1, left) != 1) break;
        ssize_t k = recv(fd, buf + have, cap - have, MSG_DONTWAIT);
        if (k <= 0) break;
        have += k;
        if (have == cap) break;
    }
    return have;
}

static int udp_server(void) {
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = lo(53);
    int big = 4 << 20;
    setsockopt(s, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    if (bind(s, (struct sockaddr *)&a, sizeof a)) { printf("bind53=%s\n", h_en(errno)); exit(1); }
    return s;
}

static int tcp_server(void) {
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = lo(53);
    if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 4)) { printf("bind53=%s\n", h_en(errno)); exit(1); }
    return s;
}

static int dup_udp(const char *name) {
    int srv = udp_server();
    int c = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = lo(53);
    if (connect(c, (struct sockaddr *)&a, sizeof a)) { printf("connect=%s\n", h_en(errno)); return 1; }
    int d = dup(c);
    unsigned char q[512];
    int n = query(q, 7, name, 1);
    ssize_t k = send(d, q, n, 0);
    printf("send=%zd errno=%s\n", k, h_en(k < 0 ? errno : 0));
    unsigned char got[4096];
    size_t g = drain(srv, got, sizeof got, 300);
    printf("server_got=%d\n", g > 0 && has_label(got, g, name));
    /* Control on the original descriptor: answered (tailnet) or sent (public). */
    k = send(c, q, n, 0);
    g = drain(srv, got, sizeof got, 300);
    printf("orig_server_got=%d\n", g > 0 && has_label(got, g, name));
    return 0;
}

static int tcp_connect53(void) {
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = lo(53);
    if (connect(c, (struct sockaddr *)&a, sizeof a)) { printf("connect=%s\n", h_en(errno)); exit(1); }
    return c;
}

static int tcp_pipe(const char *n1, const char *n2) {
    int l = tcp_server();
    int c = tcp_connect53();
    int a = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    unsigned char b[1024];
    int k1 = query(b + 2, 1, n1, 1);
    b[0] = k1 >> 8; b[1] = k1;
    int k2 = query(b + 4 + k1, 2, n2, 28);
    b[2 + k1] = k2 >> 8; b[3 + k1] = k2;
    ssize_t w = write(c, b, 4 + k1 + k2);
    printf("write=%zd errno=%s\n", w, h_en(w < 0 ? errno : 0));
    unsigned char got[4096];
    size_t g = drain(a, got, sizeof got, 300);
    printf("server_saw_n1=%d\nserver_saw_n2=%d\n", has_label(got, g, n1), has_label(got, g, n2));
    /* Count framed answers on the client's side before EOF (or 500 ms). */
    unsigned char r[4096];
    size_t have = 0;
    double end = h_now_ms() + 500;
    while (have < sizeof r) {
        int left = (int)(end - h_now_ms());
        struct pollfd p = { c, POLLIN, 0 };
        if (left <= 0 || poll(&p, 1, left) != 1) break;
        ssize_t k = read(c, r + have, sizeof r - have);
        if (k <= 0) break;
        have += k;
    }
    int answers = 0;
    for (size_t off = 0; off + 2 <= have;) {
        size_t len = (size_t)r[off] << 8 | r[off + 1];
        if (off + 2 + len > have) break;
        answers++;
        off += 2 + len;
    }
    printf("answers=%d\n", answers);
    return 0;
}

static int tcp_split(const char *name) {
    int l = tcp_server();
    int c = tcp_connect53();
    int a = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    unsigned char b[600];
    int k = query(b + 2, 1, name, 1);
    b[0] = k >> 8; b[1] = k;
    /* The length and part of the header, then the rest (a buffered writer's flush point). */
    ssize_t w1 = write(c, b, 8);
    ssize_t w2 = write(c, b + 8, 2 + k - 8);
    printf("write1=%zd write2=%zd errno=%s\n", w1, w2, h_en(w2 < 0 ? errno : 0));
    unsigned char got[4096];
    size_t g = drain(a, got, sizeof got, 300);
    printf("server_bytes=%zu\nserver_saw=%d\n", g, has_label(got, g, name));
    return 0;
}

static int rs_fd, rs_port;
static volatile int alarms;
static void on_alarm(int s) { (void)s; alarms++; }

static void *restart_sender(void *arg) {
    (void)arg;
    usleep(300000);
    unsigned char q[512];
    if (rs_port == 53) {
        int n = query(q, 9, "peer-1", 1);
        send(rs_fd, q, n, 0);
    } else {
        /* The peer (bound to PORT) sends to the client. */
        int p = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        int one = 1;
        setsockopt(p, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        struct sockaddr_in a = lo(rs_port);
        bind(p, (struct sockaddr *)&a, sizeof a);
        struct sockaddr_in me;
        socklen_t ml = sizeof me;
        getsockname(rs_fd, (struct sockaddr *)&me, &ml);
        sendto(p, "hello", 5, 0, (struct sockaddr *)&me, ml);
    }
    return NULL;
}

static int restart(int port) {
    rs_port = port;
    rs_fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = lo(port);
    if (connect(rs_fd, (struct sockaddr *)&a, sizeof a)) { printf("connect=%s\n", h_en(errno)); return 1; }
    struct sigaction sa = { .sa_handler = on_alarm, .sa_flags = SA_RESTART };
    sigaction(SIGALRM, &sa, NULL);
    pthread_t t;
    pthread_create(&t, NULL, restart_sender, NULL);
    struct itimerval it = { { 0, 50000 }, { 0, 50000 } };
    setitimer(ITIMER_REAL, &it, NULL);
    unsigned char b[4096];
    ssize_t k = recv(rs_fd, b, sizeof b, 0);
    int e = k < 0 ? errno : 0;
    struct itimerval off = {0};
    setitimer(ITIMER_REAL, &off, NULL);
    pthread_join(t, NULL);
    printf("recv=%zd\nerrno=%s\nalarms=%d\n", k, h_en(e), alarms);
    return 0;
}

static int bl_fd;
static void *blocked_reader(void *arg) {
    (void)arg;
    unsigned char b[4096];
    struct sockaddr_in from = {0};
    socklen_t fl = sizeof from;
    ssize_t k = recvfrom(bl_fd, b, sizeof b, 0, (struct sockaddr *)&from, &fl);
    char ip[64] = "?";
    inet_ntop(AF_INET, &from.sin_addr, ip, sizeof ip);
    printf("recv=%zd\nfrom=%s:%d\n", k, ip, ntohs(from.sin_port));
    return NULL;
}

static int blocked(int first) {
    bl_fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in any = { .sin_family = AF_INET };
    bind(bl_fd, (struct sockaddr *)&any, sizeof any);
    pthread_t t;
    unsigned char q[512];
    int n = query(q, 11, "peer-1", 1);
    struct sockaddr_in a = lo(53);
    if (first) {
        /* Control: the question goes out before anyone reads. */
        ssize_t k = sendto(bl_fd, q, n, 0, (struct sockaddr *)&a, sizeof a);
        printf("sendto=%zd\n", k);
    }
    pthread_create(&t, NULL, blocked_reader, NULL);
    usleep(200000); /* the reader is in recvfrom by now */
    if (!first) {
        ssize_t k = sendto(bl_fd, q, n, 0, (struct sockaddr *)&a, sizeof a);
        printf("sendto=%zd\n", k);
    }
    pthread_join(t, NULL);
    return 0;
}

static int is_my_fd[65536];
static int inj_dup2(int keep) {
    /* Descriptors open now are the program's (0-2 and whatever the launcher left). */
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    int lim = rl.rlim_cur > 65536 ? 65536 : (int)rl.rlim_cur;
    for (int i = 0; i < lim; i++) is_my_fd[i] = fcntl(i, F_GETFD) >= 0;
    int u = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    is_my_fd[u] = 1;
    unsigned char q[512], r[4096];
    int n = query(q, 21, "peer-1", 1);
    struct sockaddr_in a = lo(53);
    ssize_t k = sendto(u, q, n, 0, (struct sockaddr *)&a, sizeof a);
    struct pollfd p = { u, POLLIN, 0 };
    int ready = poll(&p, 1, 1000);
    ssize_t got = ready == 1 ? recv(u, r, sizeof r, 0) : -1;
    printf("first_sendto=%zd first_answer=%zd\n", k, got);
    /* The program's own TCP connection. */
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in la = lo(0);
    socklen_t ll = sizeof la;
    bind(l, (struct sockaddr *)&la, sizeof la);
    listen(l, 1);
    getsockname(l, (struct sockaddr *)&la, &ll);
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    connect(c, (struct sockaddr *)&la, ll);
    int acc = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    is_my_fd[l] = is_my_fd[c] = is_my_fd[acc] = 1;
    /* Like a program putting a descriptor at a fixed number it believes free (a shell's
     * `exec 900>&3`, an inetd-style child): dup2 onto numbers it did not open. The library's
     * own descriptors are at the top of the range; take every free-looking one there. */
    int taken = 0;
    if (!keep) {
        for (int i = lim - lim / 4 - 1; i < lim; i++) {
            if (!is_my_fd[i] && fcntl(i, F_GETFD) >= 0) {
                if (dup2(c, i) == i) taken++;
            }
        }
    }
    printf("taken=%d\n", taken);
    n = query(q, 22, "peer-1", 1);
    k = sendto(u, q, n, 0, (struct sockaddr *)&a, sizeof a);
    printf("second_sendto=%zd errno=%s\n", k, h_en(k < 0 ? errno : 0));
    size_t g = drain(acc, r, sizeof r, 300);
    printf("tcp_stream_got=%zu\n", g);
    return 0;
}

/* ---- race */
static int race_fd, race_n;
static int public_sent;
static void *race_tailnet(void *arg) {
    unsigned char q[512];
    for (int i = 0; i < race_n; i++) {
        int n = query(q, (int)(long)arg * 10000 + i, "peer-1", 1);
        send(race_fd, q, n, 0);
    }
    return NULL;
}
static void *race_public(void *arg) {
    (void)arg;
    unsigned char q[512];
    for (int i = 0; i < race_n; i++) {
        int n = query(q, 40000 + i, "public-name.example", 1);
        if (send(race_fd, q, n, 0) == n) public_sent++;
    }
    return NULL;
}
static int race(int n) {
    race_n = n;
    int srv = udp_server();
    race_fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    int big = 8 << 20;
    setsockopt(race_fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    struct sockaddr_in a = lo(53);
    connect(race_fd, (struct sockaddr *)&a, sizeof a);
    pthread_t t1, t2, t3;
    pthread_create(&t1, NULL, race_tailnet, (void *)1L);
    pthread_create(&t2, NULL, race_tailnet, (void *)2L);
    pthread_create(&t3, NULL, race_public, NULL);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    pthread_join(t3, NULL);
    int public_got = 0, answers = 0;
    unsigned char b[4096];
    for (;;) {
        struct pollfd p = { srv, POLLIN, 0 };
        if (poll(&p, 1, 200) != 1) break;
        ssize_t k = recv(srv, b, sizeof b, 0);
        if (k > 0 && has_label(b, k, "public-name")) public_got++;
    }
    for (;;) {
        struct pollfd p = { race_fd, POLLIN, 0 };
        if (poll(&p, 1, 200) != 1) break;
        if (recv(race_fd, b, sizeof b, 0) > 0) answers++;
    }
    printf("public_sent=%d\npublic_got=%d\nanswers_got=%d\n", public_sent, public_got, answers);
    return 0;
}

/* syscall(2) with numbers the library does not dispatch, and failing ones. */
#include <sys/syscall.h>
#include <linux/futex.h>
static int sys_checks(void) {
    printf("gettid_ok=%d\n", syscall(SYS_gettid) == gettid());
    unsigned char b[16];
    printf("getrandom=%ld\n", syscall(SYS_getrandom, b, sizeof b, 0));
    errno = 0;
    long r = syscall(SYS_close, 65000);
    printf("close_bad=%ld errno_close=%s\n", r, h_en(errno));
    errno = 0;
    r = syscall(99999);
    printf("unknown=%ld errno_unknown=%s\n", r, h_en(errno));
    int x = 0;
    printf("futex_wake=%ld\n", syscall(SYS_futex, &x, FUTEX_WAKE_PRIVATE, 1, 0, 0, 0));
    errno = 0;
    struct sockaddr_in a = lo(53);
    r = syscall(SYS_connect, 65001, &a, sizeof a);
    printf("connect_bad=%ld errno_connect=%s\n", r, h_en(errno));
    /* A DNS question through syscall(SYS_sendto) and the answer through syscall(SYS_recvfrom). */
    int u = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    unsigned char q[512], ans[4096];
    int n = query(q, 5, "peer-1", 1);
    r = syscall(SYS_sendto, u, q, n, 0, &a, sizeof a);
    struct sockaddr_in from = {0};
    socklen_t fl = 4; /* shorter than the address: truncated, the full length reported */
    struct pollfd p = { u, POLLIN, 0 };
    poll(&p, 1, 1000);
    long k = syscall(SYS_recvfrom, u, ans, sizeof ans, MSG_DONTWAIT, &from, &fl);
    printf("sys_sendto=%ld sys_recvfrom=%ld fromlen=%u port=%d\n", r, k, fl, ntohs(from.sin_port));
    return 0;
}

/* An AF_INET6 socket (IPV6_V6ONLY as ONLY says) asks 127.0.0.1:53, v4-mapped: the kernel
 * refuses that on a v6-only socket; a dual-stack one gets the answer from ::ffff:127.0.0.1. */
#include <netinet/in.h>
static int v6(int only) {
    int u = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    setsockopt(u, IPPROTO_IPV6, IPV6_V6ONLY, &only, sizeof only);
    /* v6-only: another socket (another program's, another user's) holds the same port in
     * IPv4, which a v6-only socket allows. */
    int other = -1;
    if (only) {
        struct sockaddr_in6 me = { .sin6_family = AF_INET6, .sin6_port = htons(40053) };
        bind(u, (struct sockaddr *)&me, sizeof me);
        other = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in oa = { .sin_family = AF_INET, .sin_port = htons(40053) };
        if (bind(other, (struct sockaddr *)&oa, sizeof oa)) printf("other_bind=%s\n", h_en(errno));
    }
    struct sockaddr_in6 a = { .sin6_family = AF_INET6, .sin6_port = htons(53) };
    inet_pton(AF_INET6, "::ffff:127.0.0.1", &a.sin6_addr);
    unsigned char q[512], r[4096];
    int n = query(q, 31, "peer-1", 1);
    errno = 0;
    ssize_t k = sendto(u, q, n, 0, (struct sockaddr *)&a, sizeof a);
    printf("sendto=%zd sendto_errno=%s\n", k, h_en(k < 0 ? errno : 0));
    struct pollfd p = { u, POLLIN, 0 };
    struct sockaddr_in6 from = {0};
    socklen_t fl = sizeof from;
    ssize_t g = poll(&p, 1, 500) == 1 ? recvfrom(u, r, sizeof r, 0, (struct sockaddr *)&from, &fl) : -1;
    char ip[64] = "?";
    inet_ntop(AF_INET6, &from.sin6_addr, ip, sizeof ip);
    printf("answer=%zd from=[%s]:%d\n", g, ip, ntohs(from.sin6_port));
    if (other >= 0) printf("other_socket_got=%zu\n", drain(other, r, sizeof r, 200));
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2) return 2;
    lo_up();
    const char *m = argv[1];
    if (!strcmp(m, "dup_udp") && argc == 3) return dup_udp(argv[2]);
    if (!strcmp(m, "tcp_pipe") && argc == 4) return tcp_pipe(argv[2], argv[3]);
    if (!strcmp(m, "tcp_split") && argc == 3) return tcp_split(argv[2]);
    if (!strcmp(m, "restart") && argc == 3) return restart(atoi(argv[2]));
    if (!strcmp(m, "blocked")) return blocked(argc == 3 && !strcmp(argv[2], "first"));
    if (!strcmp(m, "inj_dup2")) return inj_dup2(argc == 3 && !strcmp(argv[2], "keep"));
    if (!strcmp(m, "race") && argc == 3) return race(atoi(argv[2]));
    if (!strcmp(m, "sys")) return sys_checks();
    if (!strcmp(m, "v6") && argc == 3) return v6(!strcmp(argv[2], "only"));
    return 2;
}
