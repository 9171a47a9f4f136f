/* a_names: names as an attacker (or a confused program) hands them to the resolver APIs.
 * NAME arguments understand the escapes \r \n \t \\ and \xHH (so a shell-free argv can carry
 * control characters).
 *
 *   a_names many N FMT         getaddrinfo of N distinct names FMT % i (FMT has one %d);
 *                              prints ok= again= other= placeholder= ms=
 *   a_names gai NAME PORT      getaddrinfo(NAME, PORT) and gethostbyname(NAME); if an address
 *                              came back, connect to it, send a GET and print reply=<first line>
 *   a_names http RAWNAME PORT PROXYPORT AUTH   control: write "CONNECT RAWNAME:PORT" to the
 *                              HTTP proxy on 127.0.0.1:PROXYPORT ourselves (Basic AUTH, "-":
 *                              none), then a GET; print what comes back as reply=
 *   a_names socks RAWNAME PORT PROXYPORT   control: a SOCKS5 CONNECT for RAWNAME (ATYP 3,
 *                              no auth) to 127.0.0.1:PROXYPORT, written by hand; prints rep=
 *   a_names dns53 SERVER NAME  one A query for NAME (labels split on '.', any bytes inside) to
 *                              SERVER:53 over a connected UDP socket; prints answer=<first A,
 *                              or none> rcode=
 */
#include "h_common.h"

/* Decode the escapes in place; returns the decoded length (may contain NUL). */
static size_t unescape(char *s) {
    char *o = s;
    const char *i = s;
    while (*i) {
        if (i[0] == '\\' && i[1]) {
            char c = i[1];
            if (c == 'r') { *o++ = '\r'; i += 2; continue; }
            if (c == 'n') { *o++ = '\n'; i += 2; continue; }
            if (c == 't') { *o++ = '\t'; i += 2; continue; }
            if (c == '\\') { *o++ = '\\'; i += 2; continue; }
            if (c == 'x' && i[2] && i[3]) {
                char h[3] = {i[2], i[3], 0};
                *o++ = (char)strtol(h, NULL, 16);
                i += 4;
                continue;
            }
        }
        *o++ = *i++;
    }
    *o = 0;
    return (size_t)(o - s);
}

static int placeholder(const struct sockaddr *sa) {
    if (sa->sa_family == AF_INET) {
        unsigned char *b = (unsigned char *)&((struct sockaddr_in *)sa)->sin_addr;
        return (b[0] & 0xf0) == 240;
    }
    if (sa->sa_family == AF_INET6) {
        unsigned char *b = ((struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
        static const unsigned char p[8] = {1, 0, 0, 0, 0, 0, 0, 0};
        return memcmp(b, p, 8) == 0;
    }
    return 0;
}

static void reply(int fd) {
    char buf[4096];
    size_t have = 0;
    while (have < sizeof buf - 1) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 3000) <= 0) break;
        ssize_t n = recv(fd, buf + have, sizeof buf - 1 - have, 0);
        if (n <= 0) break;
        have += n;
    }
    buf[have] = 0;
    /* Every line, escaped onto one output line. */
    printf("reply=");
    for (size_t i = 0; i < have; i++) {
        unsigned char c = buf[i];
        if (c >= 32 && c < 127) putchar(c); else printf("\\x%02x", c);
    }
    printf("\n");
}

static int tcp_to(const char *ip, int port) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, ip, &a.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(fd, (struct sockaddr *)&a, sizeof a)) { printf("connect=%d\n", errno); exit(1); }
    return fd;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    const char *cmd = argv[1];
    if (!strcmp(cmd, "many") && argc == 4) {
        int n = atoi(argv[2]), ok = 0, again = 0, other = 0, ph = 0;
        double t0 = h_now_ms();
        char name[256];
        for (int i = 0; i < n; i++) {
            snprintf(name, sizeof name, argv[3], i);
            struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;
            int r = getaddrinfo(name, "80", &hints, &res);
            if (r == 0) {
                ok++;
                if (placeholder(res->ai_addr)) ph++;
                freeaddrinfo(res);
            } else if (r == EAI_AGAIN) again++;
            else other++;
        }
        printf("ok=%d\nagain=%d\nother=%d\nplaceholder=%d\nms=%.0f\n", ok, again, other, ph, h_now_ms() - t0);
        return 0;
    }
    if (!strcmp(cmd, "gai") && argc == 4) {
        unescape(argv[2]);
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
        int r = getaddrinfo(argv[2], argv[3], &hints, &res);
        printf("gai=%s\n", r ? gai_strerror(r) : "ok");
        struct hostent *h = gethostbyname(argv[2]);
        int hph = h && h->h_addrtype == AF_INET && (((unsigned char *)h->h_addr_list[0])[0] & 0xf0) == 240;
        printf("gethostbyname=%s\n", !h ? "fail" : hph ? "placeholder" : "address");
        if (r == 0) {
            printf("placeholder=%d\n", placeholder(res->ai_addr));
            int fd = socket(res->ai_family, SOCK_STREAM, 0);
            if (connect(fd, res->ai_addr, res->ai_addrlen) == 0) {
                if (send(fd, "GET / HTTP/1.0\r\n\r\n", 18, 0) == 18) reply(fd);
            } else printf("connect=%d\n", errno);
        }
        return 0;
    }
    if (!strcmp(cmd, "http") && argc == 6) {
        unescape(argv[2]);
        int fd = tcp_to("127.0.0.1", atoi(argv[4]));
        char req[2048];
        int n = strcmp(argv[5], "-") ? snprintf(req, sizeof req, "CONNECT %s:%s HTTP/1.1\r\nProxy-Authorization: Basic %s\r\n\r\n", argv[2], argv[3], argv[5])
                                      : snprintf(req, sizeof req, "CONNECT %s:%s HTTP/1.1\r\n\r\n", argv[2], argv[3]);
        if (send(fd, req, n, 0) != n) return 1;
        usleep(300000);
        if (send(fd, "GET / HTTP/1.0\r\n\r\n", 18, 0) != 18) return 1;
        reply(fd);
        return 0;
    }
    if (!strcmp(cmd, "socks") && argc == 5) {
        size_t nl = unescape(argv[2]);
        int fd = tcp_to("127.0.0.1", atoi(argv[4]));
        unsigned char b[600];
        if (send(fd, "\x05\x01\x00", 3, 0) != 3 || recv(fd, b, 2, MSG_WAITALL) != 2 || b[1] != 0) { printf("greeting=fail\n"); return 1; }
        size_t k = 0;
        b[k++] = 5; b[k++] = 1; b[k++] = 0; b[k++] = 3; b[k++] = nl; memcpy(b + k, argv[2], nl); k += nl;
        int port = atoi(argv[3]);
        b[k++] = port >> 8; b[k++] = port & 0xff;
        if (send(fd, b, k, 0) != (ssize_t)k) return 1;
        struct pollfd p = {fd, POLLIN, 0};
        printf("rep=%d\n", poll(&p, 1, 5000) == 1 && recv(fd, b, 2, 0) == 2 ? b[1] : -1);
        return 0;
    }
    if (!strcmp(cmd, "dns53") && argc == 4) {
        size_t nl = unescape(argv[3]);
        unsigned char q[600] = {0x42, 0x42, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0};
        size_t k = 12, start = 0;
        for (size_t i = 0; i <= nl; i++) {
            if (i == nl || argv[3][i] == '.') {
                size_t l = i - start;
                if (l == 0 || l > 255 || k + l + 6 > sizeof q) break;
                q[k++] = (unsigned char)l;
                memcpy(q + k, argv[3] + start, l);
                k += l;
                start = i + 1;
            }
        }
        q[k++] = 0;
        q[k++] = 0; q[k++] = 1; /* A */
        q[k++] = 0; q[k++] = 1; /* IN */
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(53)};
        inet_pton(AF_INET, argv[2], &a.sin_addr);
        int fd = socket(AF_INET, SOCK_DGRAM, 0);
        if (connect(fd, (struct sockaddr *)&a, sizeof a) || send(fd, q, k, 0) != (ssize_t)k) { printf("answer=send:%d\n", errno); return 0; }
        unsigned char r[1500];
        struct pollfd p = {fd, POLLIN, 0};
        ssize_t n = poll(&p, 1, 1500) == 1 ? recv(fd, r, sizeof r, 0) : -1;
        if (n < 12) { printf("answer=none\n"); return 0; }
        int rcode = r[3] & 0xf, an = r[6] << 8 | r[7];
        /* Skip the question (it echoes ours: same length), then find the first A record. */
        size_t o = k;
        char ip[32] = "none";
        for (int i = 0; i < an && o + 12 <= (size_t)n; i++) {
            if ((r[o] & 0xc0) == 0xc0) o += 2;
            else { while (o < (size_t)n && r[o]) o += r[o] + 1; o++; }
            if (o + 10 > (size_t)n) break;
            int type = r[o] << 8 | r[o + 1], rdl = r[o + 8] << 8 | r[o + 9];
            o += 10;
            if (type == 1 && rdl == 4 && o + 4 <= (size_t)n) { inet_ntop(AF_INET, r + o, ip, sizeof ip); break; }
            o += rdl;
        }
        printf("answer=%s\nrcode=%d\n", ip, rcode);
        return 0;
    }
    return 2;
}
