/* a_uring: a TCP connect submitted through io_uring (IORING_OP_CONNECT, liburing), which no
 * libc hook sees. Linked with -luring.
 *   a_uring IP PORT
 * Prints setup=<0|errno name> and, when the ring exists, connect=<0|errno name>.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static const char *en(int e) {
    switch (e) {
    case 0: return "0";
    case ENOSYS: return "ENOSYS";
    case EPERM: return "EPERM";
    case ECONNREFUSED: return "ECONNREFUSED";
    case ENETUNREACH: return "ENETUNREACH";
    case ETIMEDOUT: return "ETIMEDOUT";
    case ECANCELED: return "ECANCELED";
    default: { static char b[32]; snprintf(b, sizeof b, "E%d", e); return b; }
    }
}

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(atoi(argv[2]));
    if (inet_pton(AF_INET, argv[1], &a.sin_addr) != 1) return 2;
    struct io_uring ring;
    int r = io_uring_queue_init(4, &ring, 0);
    printf("setup=%s\n", en(r < 0 ? -r : 0));
    if (r < 0) return 0;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
    io_uring_prep_connect(sqe, fd, (struct sockaddr *)&a, sizeof a);
    io_uring_submit(&ring);
    struct io_uring_cqe *cqe;
    struct __kernel_timespec ts = {.tv_sec = 5, .tv_nsec = 0};
    r = io_uring_wait_cqe_timeout(&ring, &cqe, &ts);
    if (r < 0) { printf("connect=wait:%s\n", en(-r)); return 0; }
    printf("connect=%s\n", en(cqe->res < 0 ? -cqe->res : 0));
    io_uring_cqe_seen(&ring, cqe);
    io_uring_queue_exit(&ring);
    return 0;
}
