/* h_res: the libresolv query APIs, as a program linked with -lresolv calls them, printed as
 * key=value lines. Meant to run under dns_meter (its resolver answers A 192.0.2.7), in a
 * namespace whose resolv.conf has "search corp.example", with TSPROXY_DOMAINS=corp.example.
 *
 * Each line: KEY=ret=N h=H_ERRNO rcode=R an=ANCOUNT addr=FIRST_A_OR_AAAA [rh=statp->res_h_errno]
 * Tailnet names: peer-1 (short), peer-1.tail1234.ts.net; non-tailnet: web.example.
 * The __res_* forms are bound with .symver to the names programs linked before glibc 2.34 use.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <resolv.h>
#include <stdio.h>
#include <string.h>

#ifdef __x86_64__
int old_res_query(const char *, int, int, unsigned char *, int);
int old_res_search(const char *, int, int, unsigned char *, int);
int old_res_querydomain(const char *, const char *, int, int, unsigned char *, int);
int old_res_nquery(res_state, const char *, int, int, unsigned char *, int);
int old_res_nsearch(res_state, const char *, int, int, unsigned char *, int);
int old_res_nquerydomain(res_state, const char *, const char *, int, int, unsigned char *, int);
int old_res_send(const unsigned char *, int, unsigned char *, int);
int old_res_nsend(res_state, const unsigned char *, int, unsigned char *, int);
__asm__(".symver old_res_query,__res_query@GLIBC_2.2.5");
__asm__(".symver old_res_search,__res_search@GLIBC_2.2.5");
__asm__(".symver old_res_querydomain,__res_querydomain@GLIBC_2.2.5");
__asm__(".symver old_res_nquery,__res_nquery@GLIBC_2.2.5");
__asm__(".symver old_res_nsearch,__res_nsearch@GLIBC_2.2.5");
__asm__(".symver old_res_nquerydomain,__res_nquerydomain@GLIBC_2.2.5");
__asm__(".symver old_res_send,__res_send@GLIBC_2.2.5");
__asm__(".symver old_res_nsend,__res_nsend@GLIBC_2.2.5");
#endif

static unsigned char buf[4096];

/* The first A/AAAA record of the answer in buf (n bytes), as text, or "-". */
static const char *first_addr(int n) {
    static char out[64];
    strcpy(out, "-");
    if (n < 12 || n > (int)sizeof buf)
        return out;
    int qd = buf[4] << 8 | buf[5], an = buf[6] << 8 | buf[7];
    int i = 12;
    for (int q = 0; q < qd; q++) {
        while (i < n && buf[i] != 0 && (buf[i] & 0xc0) == 0)
            i += 1 + buf[i];
        i += (i < n && (buf[i] & 0xc0) == 0xc0) ? 2 : 1;
        i += 4;
    }
    for (int a = 0; a < an && i < n; a++) {
        while (i < n && buf[i] != 0 && (buf[i] & 0xc0) == 0)
            i += 1 + buf[i];
        i += (i < n && (buf[i] & 0xc0) == 0xc0) ? 2 : 1;
        if (i + 10 > n)
            break;
        int type = buf[i] << 8 | buf[i + 1], len = buf[i + 8] << 8 | buf[i + 9];
        i += 10;
        if (i + len > n)
            break;
        if (type == 1 && len == 4)
            return inet_ntop(AF_INET, buf + i, out, sizeof out);
        if (type == 28 && len == 16)
            return inet_ntop(AF_INET6, buf + i, out, sizeof out);
        i += len;
    }
    return out;
}

static void show(const char *key, int r, res_state st) {
    int got = r > 0 ? r : (buf[3] != 0xee ? 12 : 0); /* a NODATA answer is still in the buffer */
    printf("%s=ret=%d h=%d rcode=%d an=%d addr=%s", key, r, h_errno, got >= 12 ? buf[3] & 0xf : -1, got >= 12 ? (buf[6] << 8 | buf[7]) : -1,
           first_addr(r > 0 ? r : 0));
    if (st)
        printf(" rh=%d", st->res_h_errno);
    printf("\n");
}

static void reset(void) {
    memset(buf, 0xee, sizeof buf);
    h_errno = 12345;
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct __res_state st;
    memset(&st, 0, sizeof st);
    if (res_ninit(&st) != 0) {
        printf("res_ninit=fail\n");
        return 2;
    }
    unsigned char q[512];
    int n;

    reset(); show("query_a", res_query("peer-1", C_IN, T_A, buf, sizeof buf), NULL);
    reset(); show("query_aaaa", res_query("peer-1.tail1234.ts.net", C_IN, T_AAAA, buf, sizeof buf), NULL);
    reset(); show("query_mx", res_query("peer-1", C_IN, T_MX, buf, sizeof buf), &_res);
    reset(); show("query_chaos", res_query("peer-1", C_CHAOS, T_A, buf, sizeof buf), NULL);
    reset(); show("query_plain", res_query("web.example", C_IN, T_A, buf, sizeof buf), NULL);

    reset(); show("search_short", res_search("peer-1", C_IN, T_A, buf, sizeof buf), NULL);
    reset(); show("search_composed", res_search("nxhost.prod", C_IN, T_A, buf, sizeof buf), NULL);
    reset(); show("search_plain", res_search("web.example", C_IN, T_A, buf, sizeof buf), NULL);
    reset(); show("querydomain", res_querydomain("peer-1", "tail1234.ts.net", C_IN, T_A, buf, sizeof buf), NULL);
    reset(); show("querydomain_plain", res_querydomain("web", "example", C_IN, T_A, buf, sizeof buf), NULL);

    reset(); show("nquery", res_nquery(&st, "peer-1", C_IN, T_A, buf, sizeof buf), &st);
    reset(); show("nquery_mx", res_nquery(&st, "peer-1", C_IN, T_MX, buf, sizeof buf), &st);
    reset(); show("nsearch", res_nsearch(&st, "peer-1", C_IN, T_AAAA, buf, sizeof buf), &st);
    reset(); show("nquerydomain", res_nquerydomain(&st, "db", "corp.example", C_IN, T_A, buf, sizeof buf), &st);

    n = res_mkquery(QUERY, "peer-1", C_IN, T_A, NULL, 0, NULL, q, sizeof q);
    reset(); int r = res_send(q, n, buf, sizeof buf);
    show("send", r, NULL);
    printf("send_id=%d\n", r >= 2 && memcmp(q, buf, 2) == 0);
    reset(); show("nsend", res_nsend(&st, q, n, buf, sizeof buf), NULL);
    n = res_mkquery(QUERY, "web.example", C_IN, T_A, NULL, 0, NULL, q, sizeof q);
    reset(); show("send_plain", res_send(q, n, buf, sizeof buf), NULL);

    /* Truncation, as glibc's UDP path: a buffer that holds the question gets the first anslen
     * bytes (never one more); one that cannot hold the question fails ("try again", as glibc
     * drops such a reply and times out); under a header, EINVAL. The _plain runs are glibc's. */
    reset(); r = res_query("peer-1", C_IN, T_A, buf, 30);
    int intact = 1;
    for (int i = 30; i < 64; i++)
        intact &= buf[i] == 0xee;
    printf("trunc=ret=%d intact=%d an=%d\n", r, intact, buf[6] << 8 | buf[7]);
    reset(); r = res_query("web.example", C_IN, T_A, buf, 35);
    intact = 1;
    for (int i = 35; i < 64; i++)
        intact &= buf[i] == 0xee;
    printf("trunc_plain=ret=%d intact=%d an=%d\n", r, intact, buf[6] << 8 | buf[7]);
    reset(); errno = 0; r = res_query("peer-1", C_IN, T_A, buf, 20);
    printf("cut=ret=%d h=%d errno=%d\n", r, h_errno, errno);
    reset(); errno = 0; r = res_query("web.example", C_IN, T_A, buf, 20);
    printf("cut_plain=ret=%d h=%d errno=%d\n", r, h_errno, errno);
    reset(); errno = 0; r = res_query("peer-1", C_IN, T_A, buf, 11);
    printf("tiny=ret=%d h=%d errno=%d untouched=%d\n", r, h_errno, errno, buf[0] == 0xee);
    reset(); errno = 0; r = res_query("web.example", C_IN, T_A, buf, 11);
    printf("tiny_plain=ret=%d h=%d errno=%d untouched=%d\n", r, h_errno, errno, buf[0] == 0xee);

#ifdef __x86_64__
    reset(); show("old_query", old_res_query("peer-1", C_IN, T_A, buf, sizeof buf), NULL);
    reset(); show("old_search", old_res_search("peer-1", C_IN, T_A, buf, sizeof buf), NULL);
    reset(); show("old_querydomain", old_res_querydomain("peer-1", "tail1234.ts.net", C_IN, T_A, buf, sizeof buf), NULL);
    reset(); show("old_nquery", old_res_nquery(&st, "peer-1", C_IN, T_A, buf, sizeof buf), &st);
    reset(); show("old_nsearch", old_res_nsearch(&st, "peer-1", C_IN, T_A, buf, sizeof buf), &st);
    reset(); show("old_nquerydomain", old_res_nquerydomain(&st, "peer-1", "tail1234.ts.net", C_IN, T_A, buf, sizeof buf), &st);
    n = res_mkquery(QUERY, "peer-1", C_IN, T_A, NULL, 0, NULL, q, sizeof q);
    reset(); show("old_send", old_res_send(q, n, buf, sizeof buf), NULL);
    reset(); show("old_nsend", old_res_nsend(&st, q, n, buf, sizeof buf), NULL);
#endif
    /* Questions for tailnet names that are not plain host-name queries: a name under a
     * tailnet domain that is not a host name (SRV, TXT lookups), a host name spelled with
     * escapes, a second question, another opcode. glibc would send each as it is; tsproxy
     * answers SERVFAIL (the escaped host name: its placeholder). */
    reset(); show("query_srv", res_query("_http._tcp.peer-1.tail1234.ts.net", C_IN, T_SRV, buf, sizeof buf), NULL);
    reset(); show("search_txt", res_search("_acme.peer-1.tail1234.ts.net", C_IN, T_TXT, buf, sizeof buf), NULL);
    reset(); show("nquerydomain_srv", res_nquerydomain(&st, "_http._tcp", "peer-1.tail1234.ts.net", C_IN, T_SRV, buf, sizeof buf), &st);
    reset(); show("query_escaped", res_query("pe\\101r-1.tail1234.ts.net", C_IN, T_A, buf, sizeof buf), NULL);
    n = res_mkquery(QUERY, "_http._tcp.peer-1.tail1234.ts.net", C_IN, T_SRV, NULL, 0, NULL, q, sizeof q);
    reset(); show("send_srv", res_send(q, n, buf, sizeof buf), NULL);
    {
        /* Two questions: web.example A, then peer-1.tail1234.ts.net A. */
        static const unsigned char two[] = {0x12, 0x34, 1, 0, 0, 2, 0, 0, 0, 0, 0, 0,
            3, 'w', 'e', 'b', 7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 0, 0, 1, 0, 1,
            6, 'p', 'e', 'e', 'r', '-', '1', 8, 't', 'a', 'i', 'l', '1', '2', '3', '4', 2, 't', 's', 3, 'n', 'e', 't', 0, 0, 1, 0, 1};
        reset(); show("send_two", res_send(two, sizeof two, buf, sizeof buf), NULL);
        unsigned char notify[sizeof two];
        memcpy(notify, two, sizeof two);
        notify[2] = 4 << 3; /* NOTIFY, one question: the tailnet one */
        notify[5] = 1;
        memmove(notify + 12, two + 29, sizeof two - 29);
        reset(); show("send_notify", res_send(notify, sizeof two - 17, buf, sizeof buf), NULL);
    }
    /* Not a tailnet name: glibc asks the resolver (NOERROR, no data from the meter). */
    reset(); show("query_srv_plain", res_query("_sip._udp.web.example", C_IN, T_SRV, buf, sizeof buf), NULL);

    res_nclose(&st);
    printf("done=1\n");
    return 0;
}
