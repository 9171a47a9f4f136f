/* a_resolv: the resolver APIs that bypass getaddrinfo's hook (issue 10 item 9), as an attack
 * program of the adversarial tier.
 *
 *   a_resolv res_query NAME     res_query(NAME, C_IN, T_A): "ret=N" "h_errno=N"
 *   a_resolv res_search NAME    res_search(NAME, C_IN, T_A)
 *   a_resolv srv NAME           res_query(NAME, C_IN, T_SRV)
 *   a_resolv gai_a NAME         getaddrinfo_a(GAI_WAIT) of NAME: "gai=RC" "placeholder=0|1"
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <netdb.h>
#include <netinet/in.h>
#include <resolv.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    const char *m = argv[1], *name = argv[2];
    if (!strcmp(m, "gai_a")) {
        struct addrinfo hints = { .ai_family = AF_INET, .ai_socktype = SOCK_STREAM };
        struct gaicb req = { .ar_name = name, .ar_service = "80", .ar_request = &hints }, *list[1] = { &req };
        int r = getaddrinfo_a(GAI_WAIT, list, 1, NULL);
        int e = r == 0 ? gai_error(&req) : r;
        int ph = 0;
        if (e == 0 && req.ar_result) {
            struct sockaddr_in *a = (struct sockaddr_in *)req.ar_result->ai_addr;
            ph = (ntohl(a->sin_addr.s_addr) >> 24) == 240;
        }
        printf("gai=%d\nplaceholder=%d\n", e, ph);
        return 0;
    }
    unsigned char ans[4096];
    int type = !strcmp(m, "srv") ? ns_t_srv : ns_t_a;
    int r = !strcmp(m, "res_search") ? res_search(name, ns_c_in, type, ans, sizeof ans) : res_query(name, ns_c_in, type, ans, sizeof ans);
    printf("ret=%d\nh_errno=%d\n", r, h_errno);
    return 0;
}
