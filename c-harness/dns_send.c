/* dns_send: a program that speaks DNS itself (as dig, c-ares, libuv, musl do), on an
 * unconnected UDP socket, or that resolves with getaddrinfo. Built dynamically (for the
 * preload library) and with musl-gcc -static (for the supervisor).
 *
 *   dns_send sendto|sendmsg|sendmmsg|connect NAME[,NAME...] IP PORT
 *       a standard query (ID 0x4242, QTYPE A; with sendmmsg a second one for AAAA, ID 0x4243)
 *       with one question per NAME to IP:PORT; prints "ret=N" and "errno=E"; the query bytes
 *       as "query=HEX". `connect`: connect(), send(), then wait 3 s for an answer: "rcode=N"
 *       (or "rcode=none")
 *   dns_send then NAME1 NAME2 IP PORT
 *       NAME1's A query with sendto to IP:PORT, its reply; then NAME2's to the same address
 *       variable (as the send left it) from the same socket and from another: "retN=",
 *       "errnoN=", "replyN=" (N = 0, 1, 2)
 *   dns_send gai NAME
 *       getaddrinfo(NAME, "80", AF_UNSPEC, SOCK_STREAM); prints "gai=RC" (0: success) and
 *       "addr=ADDRESS" per result
 *
 * Each reply to sendto/sendmsg/sendmmsg is printed as "replyN=id:.. rcode:.. an:.. from:IP:PORT
 * addr:.. same:S", S = 1 when its source is byte for byte the address the query was sent to,
 * as read from that variable after the send (musl's check: memcmp over the sockaddr length).
 *
 * DNS_SEND_KILL_VM_READV=1: first install a seccomp filter of the program's own that kills the
 * process on process_vm_readv (as systemd's SystemCallFilter= without @debug does), so a
 * library that reads the datagram that way would kill it.
 */
#include "h_common.h"
#ifdef __GLIBC__ /* musl-gcc has no kernel headers; the filter is only used with the library */
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#endif

static void kill_on_process_vm_readv(void) {
#ifdef __GLIBC__
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_process_vm_readv, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = { 4, f };
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog)) {
        perror("seccomp");
        exit(3);
    }
    printf("filter=kill_process_vm_readv\n");
#else
    exit(3);
#endif
}

static size_t build(unsigned char *q, unsigned id, const char *names, unsigned qtype) {
    size_t n = 12;
    unsigned count = 0;
    const char *p = names;
    for (;;) {
        while (*p && *p != ',') {
            const char *end = p + strcspn(p, ".,");
            size_t l = (size_t)(end - p);
            q[n++] = (unsigned char)l;
            memcpy(q + n, p, l);
            n += l;
            p = *end == '.' ? end + 1 : end;
        }
        q[n++] = 0;
        q[n++] = qtype >> 8;
        q[n++] = qtype & 0xff;
        q[n++] = 0;
        q[n++] = 1;
        count++;
        if (*p != ',') break;
        p++;
    }
    unsigned char h[12] = { id >> 8, id & 0xff, 0x01, 0x00, 0, count, 0, 0, 0, 0, 0, 0 };
    memcpy(q, h, 12);
    return n;
}

/* One reply on fd, as a stub reads it (recvfrom with the sender's address), printed as
 * "replyI=..." (see the top); waits at most ms. 0 when none came. */
static int print_reply(int fd, int i, const struct sockaddr_in *a, int ms) {
    unsigned char r[1500];
    struct sockaddr_in from;
    socklen_t fl = sizeof from;
    struct pollfd pf = { fd, POLLIN, 0 };
    if (poll(&pf, 1, ms) != 1) return 0;
    long k = recvfrom(fd, r, sizeof r, 0, (struct sockaddr *)&from, &fl);
    if (k < 12) return 0;
    char ip[64] = "?";
    inet_ntop(AF_INET, &from.sin_addr, ip, sizeof ip);
    int an = r[6] << 8 | r[7];
    char addr[64] = "none";
    if (an && k >= 18 && r[k - 6] == 0 && r[k - 5] == 4) inet_ntop(AF_INET, r + k - 4, addr, sizeof addr);
    else if (an && k >= 30 && r[k - 18] == 0 && r[k - 17] == 16) inet_ntop(AF_INET6, r + k - 16, addr, sizeof addr);
    int same = fl == sizeof *a && !memcmp(&from, a, sizeof *a);
    printf("reply%d=id:%02x%02x rcode:%d an:%d from:%s:%d addr:%s same:%d\n", i, r[0], r[1], r[3] & 15, an, ip, ntohs(from.sin_port), addr, same);
    return 1;
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "gai")) {
        struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_family = AF_UNSPEC }, *res;
        int r = getaddrinfo(argv[2], "80", &hints, &res);
        printf("gai=%d\n", r);
        for (struct addrinfo *p = r ? NULL : res; p; p = p->ai_next) {
            char ip[64] = "?";
            if (p->ai_family == AF_INET) inet_ntop(AF_INET, &((struct sockaddr_in *)p->ai_addr)->sin_addr, ip, sizeof ip);
            else if (p->ai_family == AF_INET6) inet_ntop(AF_INET6, &((struct sockaddr_in6 *)p->ai_addr)->sin6_addr, ip, sizeof ip);
            printf("addr=%s\n", ip);
        }
        return 0;
    }
    if (argc == 6 && !strcmp(argv[1], "then") && strlen(argv[2]) < 800 && strlen(argv[3]) < 800) {
        /* NAME1's A query (ID 0x4242) with sendto to IP:PORT and its reply; then NAME2's A query
         * sent to the same address variable (whatever it holds now) from the same socket (ID
         * 0x4244), and from a second socket (ID 0x4245); their replies (2 s each). */
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[5])) };
        if (inet_pton(AF_INET, argv[4], &a.sin_addr) != 1) return 2;
        unsigned char q[3][1024];
        size_t n[3] = { build(q[0], 0x4242, argv[2], 1), build(q[1], 0x4244, argv[3], 1), build(q[2], 0x4245, argv[3], 1) };
        int fd[3];
        fd[0] = fd[1] = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        fd[2] = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        for (int i = 0; i < 3; i++) {
            long ret = sendto(fd[i], q[i], n[i], 0, (struct sockaddr *)&a, sizeof a);
            printf("ret%d=%ld\nerrno%d=%s\n", i, ret, i, h_en(ret < 0 ? errno : 0));
            if (ret > 0) print_reply(fd[i], i, &a, 2000);
        }
        return 0;
    }
    if (argc != 5 || strlen(argv[2]) > 800) return 2;
    if (getenv("DNS_SEND_KILL_VM_READV")) kill_on_process_vm_readv();
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[4])) };
    if (inet_pton(AF_INET, argv[3], &a.sin_addr) != 1) return 2;
    unsigned char q[2][1024];
    size_t n[2] = { build(q[0], 0x4242, argv[2], 1), build(q[1], 0x4243, argv[2], 28) };
    printf("query=");
    for (size_t i = 0; i < n[0]; i++) printf("%02x", q[0][i]);
    printf("\n");
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    long ret;
    /* Split the first query over two iovecs (header | question), as writev-style callers do. */
    struct iovec iov[2][2] = { { { q[0], 12 }, { q[0] + 12, n[0] - 12 } }, { { q[1], 12 }, { q[1] + 12, n[1] - 12 } } };
    if (!strcmp(argv[1], "sendto")) {
        ret = sendto(fd, q[0], n[0], 0, (struct sockaddr *)&a, sizeof a);
    } else if (!strcmp(argv[1], "sendmsg")) {
        struct msghdr m = { .msg_name = &a, .msg_namelen = sizeof a, .msg_iov = iov[0], .msg_iovlen = 2 };
        ret = sendmsg(fd, &m, 0);
    } else if (!strcmp(argv[1], "sendmmsg")) {
        struct mmsghdr mm[2] = {
            { .msg_hdr = { .msg_name = &a, .msg_namelen = sizeof a, .msg_iov = iov[0], .msg_iovlen = 2 } },
            { .msg_hdr = { .msg_name = &a, .msg_namelen = sizeof a, .msg_iov = iov[1], .msg_iovlen = 2 } },
        };
        ret = sendmmsg(fd, mm, 2, 0);
    } else if (!strcmp(argv[1], "connect")) {
        ret = connect(fd, (struct sockaddr *)&a, sizeof a);
        if (ret == 0) ret = send(fd, q[0], n[0], 0);
        int e = errno;
        unsigned char r[1500];
        struct pollfd pf = { fd, POLLIN, 0 };
        if (ret > 0 && poll(&pf, 1, 3000) == 1 && recv(fd, r, sizeof r, 0) >= 4) printf("rcode=%d\n", r[3] & 0x0f);
        else printf("rcode=none\n");
        errno = e;
    } else {
        return 2;
    }
    int e = ret < 0 ? errno : 0;
    printf("ret=%ld\nerrno=%s\n", ret, h_en(e));
    if (ret > 0 && strcmp(argv[1], "connect")) {
        /* Replies, as a stub reads them: recvfrom with the sender's address (300 ms each). */
        for (int i = 0; i < (strcmp(argv[1], "sendmmsg") ? 1 : 2); i++)
            if (!print_reply(fd, i, &a, 300)) break;
    }
    return 0;
}
