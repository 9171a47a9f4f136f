/* resolve: the older resolver APIs a C program may use, printed as key=value lines.
 *   resolve NAME
 * gethostbyname, gethostbyname2(AF_INET6), gethostbyname_r (with a too-small buffer first),
 * gethostbyaddr of the result, getnameinfo of the result, getaddrinfo with AI_CANONNAME.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

int main(int argc, char **argv) {
    if (argc != 2) return 1;
    const char *name = argv[1];
    char ip[INET6_ADDRSTRLEN];
    struct hostent *h = gethostbyname(name);
    if (!h) { printf("gethostbyname=fail h_errno=%d\n", h_errno); return 2; }
    inet_ntop(AF_INET, h->h_addr_list[0], ip, sizeof ip);
    printf("gethostbyname=%s name=%s len=%d\n", ip, h->h_name, h->h_length);
    struct in_addr a4;
    memcpy(&a4, h->h_addr_list[0], 4);

    struct hostent *h6 = gethostbyname2(name, AF_INET6);
    if (h6) { inet_ntop(AF_INET6, h6->h_addr_list[0], ip, sizeof ip); printf("gethostbyname2_v6=%s\n", ip); }
    else printf("gethostbyname2_v6=fail\n");

    struct hostent he, *r = NULL;
    char small[8], big[1024];
    int herr = 0;
    int rc = gethostbyname_r(name, &he, small, sizeof small, &r, &herr);
    printf("gethostbyname_r_small=%s\n", rc == ERANGE && r == NULL ? "ERANGE" : "unexpected");
    rc = gethostbyname_r(name, &he, big, sizeof big, &r, &herr);
    if (rc == 0 && r) { inet_ntop(AF_INET, r->h_addr_list[0], ip, sizeof ip); printf("gethostbyname_r=%s name=%s\n", ip, r->h_name); }
    else printf("gethostbyname_r=fail rc=%d\n", rc);

    struct hostent *rv = gethostbyaddr(&a4, 4, AF_INET);
    printf("gethostbyaddr=%s\n", rv ? rv->h_name : "fail");

    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(80), .sin_addr = a4 };
    char host[256], serv[32];
    rc = getnameinfo((struct sockaddr *)&sin, sizeof sin, host, sizeof host, serv, sizeof serv, 0);
    printf("getnameinfo=%s serv=%s\n", rc == 0 ? host : gai_strerror(rc), rc == 0 ? serv : "-");
    char tiny[2];
    rc = getnameinfo((struct sockaddr *)&sin, sizeof sin, tiny, sizeof tiny, NULL, 0, 0);
    printf("getnameinfo_small=%s\n", rc == EAI_OVERFLOW ? "EAI_OVERFLOW" : "unexpected");

    struct addrinfo hints = { .ai_flags = AI_CANONNAME, .ai_socktype = SOCK_STREAM }, *res;
    rc = getaddrinfo(name, "443", &hints, &res);
    if (rc == 0) {
        int n = 0;
        for (struct addrinfo *p = res; p; p = p->ai_next) n++;
        printf("getaddrinfo_canon=%s entries=%d first_family=%d\n", res->ai_canonname ? res->ai_canonname : "(null)", n, res->ai_family == AF_INET ? 4 : 6);
        freeaddrinfo(res);
    } else printf("getaddrinfo_canon=fail %s\n", gai_strerror(rc));
    return 0;
}
