/* h_pendwait HOST PORT: a nonblocking connect to HOST:PORT (a slow tailnet dial, ~1 s), then
 * the socket is made blocking, and calls that the kernel makes wait on a connecting socket are
 * made while the handshake is still pending. The kernel ends each wait as it ends it for a
 * socket in SYN_SENT, and so must tsproxy (it answered all of them only when the tunnel was up,
 * with the peer's bytes or after the send):
 *   dontwait  recv(MSG_DONTWAIT)                        EAGAIN at once
 *   rcvtimeo  recv with SO_RCVTIMEO 300 ms              EAGAIN after ~300 ms
 *   sndtimeo  send with SO_SNDTIMEO 300 ms              EAGAIN after ~300 ms
 *   eintr     recv, SIGALRM (handler without SA_RESTART) after 300 ms: EINTR
 * Each is reported as NAME=ERRNO and NAME_ms=elapsed. Then (timeouts cleared) the program
 * waits for writability, sends a GET and reports reply. */
#include "h_common.h"
#include <fcntl.h>
#include <signal.h>
#include <sys/time.h>

static void on_alrm(int s) { (void)s; }

static void timeo(int fd, int opt, int ms) {
    struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
    setsockopt(fd, SOL_SOCKET, opt, &tv, sizeof tv);
}

static void report(const char *name, ssize_t r, double t0) {
    printf("%s=%s\n%s_ms=%.0f\n", name, r < 0 ? h_en(errno) : "data", name, h_now_ms() - t0);
}

int main(int argc, char **argv) {
    if (argc != 3) return 1;
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct addrinfo *res = h_resolve(argv[1], argv[2], AF_INET);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int rc = connect(fd, res->ai_addr, res->ai_addrlen);
    printf("connect=%s\n", rc ? h_en(errno) : "0");
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    char b[256];
    double t0 = h_now_ms();
    report("dontwait", recv(fd, b, sizeof b, MSG_DONTWAIT), t0);
    timeo(fd, SO_RCVTIMEO, 300);
    t0 = h_now_ms();
    report("rcvtimeo", recv(fd, b, sizeof b, 0), t0);
    timeo(fd, SO_RCVTIMEO, 0);
    timeo(fd, SO_SNDTIMEO, 300);
    t0 = h_now_ms();
    report("sndtimeo", send(fd, "x", 1, MSG_NOSIGNAL), t0);
    timeo(fd, SO_SNDTIMEO, 0);
    struct sigaction sa = { .sa_handler = on_alrm };
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it = { { 0, 0 }, { 0, 300000 } };
    setitimer(ITIMER_REAL, &it, NULL);
    t0 = h_now_ms();
    report("eintr", recv(fd, b, sizeof b, 0), t0);
    h_wait_out(fd, 8000);
    if (send(fd, H_GET, strlen(H_GET), MSG_NOSIGNAL) < 0) printf("send=%s\n", h_en(errno));
    h_reply(fd, "reply");
    return 0;
}
