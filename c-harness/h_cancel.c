/* h_cancel MODE [HOST PORT]: pthread_cancel a thread blocked in
 *   loopback  connect() to a loopback listener whose accept queue is full (SYNs dropped)
 *   poll      poll() on a nonblocking tailnet connect whose proxy never answers
 *   blocking  a blocking connect() to a tailnet peer whose proxy never answers
 * 300 ms after it blocked. Reports blocked (the thread was still in the call), joined
 * (canceled|returned), and exits 0. */
#include "h_common.h"
#include <netinet/in.h>
#include <pthread.h>

static const char *mode, *host, *port;
static struct sockaddr_in lo;
static volatile int in_call, returned;

static void *victim(void *a) {
    (void)a;
    if (!strcmp(mode, "loopback")) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        in_call = 1;
        connect(fd, (struct sockaddr *)&lo, sizeof lo);
    } else {
        struct addrinfo *res = h_resolve(host, port, AF_UNSPEC);
        int blocking = !strcmp(mode, "blocking");
        int fd = socket(res->ai_family, SOCK_STREAM | (blocking ? 0 : SOCK_NONBLOCK), 0);
        in_call = 1;
        int rc = connect(fd, res->ai_addr, res->ai_addrlen);
        if (!blocking) {
            printf("connect=%s\n", rc ? h_en(errno) : "ok");
            fflush(stdout);
            struct pollfd p = { fd, POLLOUT, 0 };
            poll(&p, 1, 20000);
        }
    }
    returned = 1;
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) return 1;
    setvbuf(stdout, NULL, _IOLBF, 0);
    mode = argv[1];
    host = argc > 2 ? argv[2] : NULL;
    port = argc > 3 ? argv[3] : NULL;
    if (!strcmp(mode, "loopback")) {
        int l = socket(AF_INET, SOCK_STREAM, 0);
        lo.sin_family = AF_INET;
        lo.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        bind(l, (struct sockaddr *)&lo, sizeof lo);
        socklen_t sl = sizeof lo;
        getsockname(l, (struct sockaddr *)&lo, &sl);
        listen(l, 0);
        /* Fill the accept queue until a connect stays in progress (its SYN was dropped). */
        int filled = 0;
        for (int i = 0; i < 16; i++) {
            int c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
            int rc = connect(c, (struct sockaddr *)&lo, sizeof lo);
            if (rc && errno == EINPROGRESS && h_wait_out(c, 200) == 0) { filled = 1; break; }
        }
        printf("queue_full=%d\n", filled);
    }
    pthread_t t;
    pthread_create(&t, NULL, victim, NULL);
    usleep(300000);
    printf("blocked=%d\n", in_call && !returned);
    pthread_cancel(t);
    void *r;
    pthread_join(t, &r);
    printf("joined=%s\n", r == PTHREAD_CANCELED ? "canceled" : "returned");
    return 0;
}
