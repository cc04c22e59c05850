/* bench_overhead.c - what gpuwarden adds to a generation: latency of
 * max_tokens=1 requests minus the device time the worker reports for them
 * (Server-Timing: device;dur=...), over one keep-alive connection at a
 * moderate, closed-loop load. Prints p50/p90/p99/max of latency, device
 * time and overhead.
 *
 *   bench_overhead PORT TOKEN [requests]      (loopback only)
 *
 * Not a test: timings are never asserted. */
#include "gw_common.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double *v, int n, double p)
{
    int i = (int)(p * (n - 1) + 0.5);
    return v[i];
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: bench_overhead PORT TOKEN [requests]\n");
        return 100;
    }
    int port = atoi(argv[1]), n = argc > 3 ? atoi(argv[3]) : 300;
    if (port <= 0 || n < 10) {
        fprintf(stderr, "bench_overhead: bad port or count\n");
        return 100;
    }
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        perror("bench_overhead: connect");
        return 111;
    }
    const char *body = "{\"prompt\":\"Hi\",\"max_tokens\":1}";
    char req[4096];
    int rl = snprintf(req, sizeof(req),
                      "POST /v1/generate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                      "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                      argv[2], strlen(body), body);
    double *lat = calloc((size_t)n, sizeof(double)), *dev = calloc((size_t)n, sizeof(double)),
           *ovh = calloc((size_t)n, sizeof(double));
    char buf[65536];
    for (int i = 0; i < n + 20; i++) { /* 20 warm-up requests */
        uint64_t t0 = gw_mono_ns();
        if (send(fd, req, (size_t)rl, 0) != rl)
            return 111;
        size_t len = 0;
        long clen = -1;
        char *hend = NULL;
        for (;;) {
            ssize_t r = recv(fd, buf + len, sizeof(buf) - len - 1, 0);
            if (r <= 0) {
                fprintf(stderr, "bench_overhead: connection closed after %d requests\n", i);
                return 111;
            }
            len += (size_t)r;
            buf[len] = '\0';
            if (!hend && (hend = strstr(buf, "\r\n\r\n"))) {
                char *cl = strcasestr(buf, "Content-Length:");
                clen = cl ? strtol(cl + 15, NULL, 10) : 0;
            }
            if (hend && (long)(len - (size_t)(hend + 4 - buf)) >= clen)
                break;
        }
        uint64_t t1 = gw_mono_ns();
        if (strncmp(buf, "HTTP/1.1 200", 12) != 0) {
            fprintf(stderr, "bench_overhead: %.60s\n", buf);
            return 111;
        }
        char *st = strcasestr(buf, "Server-Timing: device;dur=");
        double d = st ? atof(st + 26) : 0;
        if (i >= 20) {
            int k = i - 20;
            lat[k] = (double)(t1 - t0) / 1e6;
            dev[k] = d;
            ovh[k] = lat[k] - d;
        }
    }
    qsort(lat, (size_t)n, sizeof(double), cmp);
    qsort(dev, (size_t)n, sizeof(double), cmp);
    qsort(ovh, (size_t)n, sizeof(double), cmp);
    printf("%d requests, max_tokens=1, one keep-alive connection (ms)\n", n);
    printf("%-10s %9s %9s %9s %9s\n", "", "p50", "p90", "p99", "max");
    printf("%-10s %9.3f %9.3f %9.3f %9.3f\n", "latency", pct(lat, n, .5), pct(lat, n, .9),
           pct(lat, n, .99), lat[n - 1]);
    printf("%-10s %9.3f %9.3f %9.3f %9.3f\n", "device", pct(dev, n, .5), pct(dev, n, .9),
           pct(dev, n, .99), dev[n - 1]);
    printf("%-10s %9.3f %9.3f %9.3f %9.3f\n", "overhead", pct(ovh, n, .5), pct(ovh, n, .9),
           pct(ovh, n, .99), ovh[n - 1]);
    close(fd);
    return 0;
}
