/* h_gai_a: getaddrinfo_a in every mode and notification, with gai_error/gai_suspend/gai_cancel,
 * printed as key=value lines. Meant to run under dns_meter (its resolver answers A 192.0.2.7).
 * Tailnet names: peer-1, peer-1.tail1234.ts.net; non-tailnet: web.example (DNS), localhost.
 * Every wait is bounded (2 s).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifdef __x86_64__
int old_getaddrinfo_a(int, struct gaicb **, int, struct sigevent *);
__asm__(".symver old_getaddrinfo_a,getaddrinfo_a@GLIBC_2.2.5");
#endif

static struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM};

static struct gaicb *req(const char *name) {
    struct gaicb *g = calloc(1, sizeof *g);
    g->ar_name = name;
    g->ar_request = &hints;
    return g;
}

/* "ERR" or the first address of a finished request. */
static const char *res(struct gaicb *g) {
    static char out[8][64];
    static int k;
    char *o = out[k++ % 8];
    int e = gai_error(g);
    if (e != 0) {
        snprintf(o, 64, "err%d", e);
        return o;
    }
    struct addrinfo *a = g->ar_result;
    if (!a)
        return "null";
    if (a->ai_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)a->ai_addr)->sin_addr, o, 64);
    else
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)a->ai_addr)->sin6_addr, o, 64);
    return o;
}

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

/* Wait (bounded) until every request of the list is done. Polls gai_error rather than
 * gai_suspend: glibc 2.36's gai_suspend can leave its on-stack wait entry on a request that
 * finishes while it returns (handle_requests sets __return before taking the lock, and the
 * removal loop skips requests no longer EAI_INPROGRESS), and the worker later writes to it. */
static void settle(struct gaicb **l, int n) {
    for (int k = 0; k < 1000; k++) {
        int busy = 0;
        for (int i = 0; i < n; i++)
            busy |= l[i] && gai_error(l[i]) == EAI_INPROGRESS;
        if (!busy)
            return;
        usleep(2000);
    }
}

static atomic_int sigs, sig_code, sig_val, thread_calls;
static struct gaicb **thread_list;
static int thread_n;
static char thread_seen[256];

static void on_sig(int s, siginfo_t *si, void *u) {
    (void)s, (void)u;
    atomic_fetch_add(&sigs, 1);
    sig_code = si->si_code;
    sig_val = si->si_value.sival_int;
}

static void on_thread(union sigval v) {
    /* Every request of the list is done when the notification runs. */
    size_t o = 0;
    for (int i = 0; i < thread_n; i++)
        o += snprintf(thread_seen + o, sizeof thread_seen - o, "%s%d", i ? "," : "", gai_error(thread_list[i]));
    atomic_fetch_add(&thread_calls, v.sival_int);
}

static void wait_for(atomic_int *c, int want) {
    double end = now_ms() + 2000;
    while (atomic_load(c) < want && now_ms() < end)
        usleep(2000);
    usleep(100 * 1000); /* a second notification would arrive by now */
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct sigaction sa = {.sa_sigaction = on_sig, .sa_flags = SA_SIGINFO};
    sigaction(SIGRTMIN, &sa, NULL);

    /* GAI_WAIT, mixed: tailnet, DNS, NULL, tailnet, /etc/hosts. */
    struct gaicb *w[5] = {req("peer-1"), req("web.example"), NULL, req("peer-1.tail1234.ts.net"), req("localhost")};
    int r = getaddrinfo_a(GAI_WAIT, w, 5, NULL);
    printf("wait_mixed=ret=%d %s %s %s %s\n", r, res(w[0]), res(w[1]), res(w[3]), res(w[4]));
    printf("cancel_done=%d\n", gai_cancel(w[0]));
    const struct gaicb *done1[1] = {w[0]};
    struct timespec zero = {0, 0};
    printf("suspend_done=%d\n", gai_suspend(done1, 1, &zero));

    /* GAI_NOWAIT, tailnet only, SIGEV_SIGNAL: one signal, as glibc sends it (SI_ASYNCNL). */
    struct gaicb *s[2] = {req("peer-1"), req("peer-2")};
    struct sigevent ev = {.sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGRTMIN, .sigev_value.sival_int = 42};
    r = getaddrinfo_a(GAI_NOWAIT, s, 2, &ev);
    wait_for(&sigs, 1);
    printf("signal_only=ret=%d count=%d asyncnl=%d val=%d %s %s\n", r, sigs, sig_code == SI_ASYNCNL, sig_val, res(s[0]), res(s[1]));

    /* GAI_NOWAIT, mixed, SIGEV_SIGNAL. */
    sigs = 0;
    struct gaicb *sm[2] = {req("peer-3"), req("web.example")};
    ev.sigev_value.sival_int = 43;
    r = getaddrinfo_a(GAI_NOWAIT, sm, 2, &ev);
    wait_for(&sigs, 1);
    settle(sm, 2);
    printf("signal_mixed=ret=%d count=%d val=%d %s %s\n", r, sigs, sig_val, res(sm[0]), res(sm[1]));

    /* GAI_NOWAIT, SIGEV_THREAD, tailnet only then mixed: one call, when all are done. */
    struct gaicb *t[1] = {req("peer-4")};
    thread_list = t, thread_n = 1;
    struct sigevent tev = {.sigev_notify = SIGEV_THREAD, .sigev_notify_function = on_thread, .sigev_value.sival_int = 1};
    r = getaddrinfo_a(GAI_NOWAIT, t, 1, &tev);
    wait_for(&thread_calls, 1);
    printf("thread_only=ret=%d calls=%d seen=%s %s\n", r, thread_calls, thread_seen, res(t[0]));
    thread_calls = 0;
    struct gaicb *tm[3] = {req("web.example"), req("peer-5"), req("localhost")};
    thread_list = tm, thread_n = 3;
    r = getaddrinfo_a(GAI_NOWAIT, tm, 3, &tev);
    wait_for(&thread_calls, 1);
    printf("thread_mixed=ret=%d calls=%d seen=%s %s %s %s\n", r, thread_calls, thread_seen, res(tm[0]), res(tm[1]), res(tm[2]));

    /* GAI_NOWAIT without notification (NULL and SIGEV_NONE), then gai_suspend/gai_error. */
    struct gaicb *nn[2] = {req("peer-6"), req("web.example")};
    r = getaddrinfo_a(GAI_NOWAIT, nn, 2, NULL);
    settle(nn, 2);
    printf("nowait_null=ret=%d %s %s\n", r, res(nn[0]), res(nn[1]));
    struct sigevent none = {.sigev_notify = SIGEV_NONE};
    struct gaicb *nt[1] = {req("peer-7")};
    r = getaddrinfo_a(GAI_NOWAIT, nt, 1, &none);
    printf("nowait_none=ret=%d err=%d %s\n", r, gai_error(nt[0]), res(nt[0]));
    if (gai_error(nt[0]) == EAI_INPROGRESS) /* (see settle: no gai_suspend on it) */
        printf("suspend_alldone=inprogress\n");
    else
        printf("suspend_alldone=%d\n", gai_suspend((const struct gaicb *const *)nt, 1, &zero));
    settle(nt, 1);

    /* A bad mode: glibc's error, and the tailnet request is left untouched. */
    struct gaicb *bad[1] = {req("peer-8")};
    bad[0]->__return = 777;
    errno = 0;
    r = getaddrinfo_a(7, bad, 1, NULL);
    printf("bad_mode=ret=%d errno=%d untouched=%d\n", r, errno, bad[0]->__return == 777 && bad[0]->ar_result == NULL);

#ifdef __x86_64__
    struct gaicb *o[2] = {req("peer-1"), req("localhost")};
    r = old_getaddrinfo_a(GAI_WAIT, o, 2, NULL);
    printf("old_wait=ret=%d %s %s\n", r, res(o[0]), res(o[1]));
#endif
    printf("done=1\n");
    return 0;
}
