/* h_pendio OP HOST PORT: OP (sendfile | splice | sendmmsg) on a nonblocking socket whose tailnet
 * handshake is still pending must fail with EAGAIN (as for a kernel socket in SYN_SENT); once
 * the tunnel is up the same call delivers a GET intact. Reports pending (EAGAIN or the byte
 * count), events, soerr, sent, reply. */
#include "h_common.h"
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/ioctl.h>
#include <sys/sendfile.h>

static const char *op;
static int memfd, pipefd[2];

/* One attempt to send the GET with OP; returns bytes (or messages for sendmmsg), -1 + errno. */
static long attempt(int fd) {
    size_t len = strlen(H_GET);
    if (!strcmp(op, "sendfile")) {
        off_t off = 0;
        return sendfile(fd, memfd, &off, len);
    }
    if (!strcmp(op, "splice")) {
        /* Top the pipe up to exactly one GET. */
        int queued = 0;
        if (ioctl(pipefd[0], FIONREAD, &queued) == 0 && queued == 0 && write(pipefd[1], H_GET, len) != (ssize_t)len) return -2;
        return splice(pipefd[0], NULL, fd, NULL, len, SPLICE_F_NONBLOCK);
    }
    struct iovec a = { (void *)H_GET, 16 }, b = { (void *)(H_GET + 16), len - 16 };
    struct mmsghdr m[2] = { { .msg_hdr = { .msg_iov = &a, .msg_iovlen = 1 } }, { .msg_hdr = { .msg_iov = &b, .msg_iovlen = 1 } } };
    return sendmmsg(fd, m, 2, MSG_NOSIGNAL);
}

int main(int argc, char **argv) {
    if (argc != 4) return 1;
    setvbuf(stdout, NULL, _IOLBF, 0);
    op = argv[1];
    memfd = memfd_create("get", 0);
    if (write(memfd, H_GET, strlen(H_GET)) < 0) return 1;
    if (pipe(pipefd)) return 1;
    fcntl(pipefd[0], F_SETFL, O_NONBLOCK);
    struct addrinfo *res = h_resolve(argv[2], argv[3], AF_UNSPEC);
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int rc = connect(fd, res->ai_addr, res->ai_addrlen);
    printf("connect=%s\n", rc ? h_en(errno) : "ok");
    long r = attempt(fd);
    if (r < 0) printf("pending=%s\n", h_en(errno)); else printf("pending=%ld\n", r);
    int ev = h_wait_out(fd, 8000);
    printf("events=0x%x\n", ev);
    printf("soerr=%s\n", h_en(h_soerr(fd)));
    if (r < 0) {
        r = attempt(fd);
        if (r < 0) printf("sent=%s\n", h_en(errno)); else printf("sent=%ld\n", r);
    }
    h_reply(fd, "reply");
    return 0;
}
