/*
 * loadgen: a load generator for the reverse protocol, in C, for measuring only.
 *
 * A Python load generator spends about as much CPU per request as the fastest
 * Python servers here spend on a whole request, and on a 2-core machine it
 * takes its core from the server it measures. This one costs a few
 * microseconds per request, so the figures are the server's. It is a
 * development tool, like matplotlib for bench.py --plot: no script of the
 * collection needs it.
 *
 *   cc -O2 -o loadgen tools/loadgen.c
 *   ./loadgen HOST PORT IN_FLIGHT TOTAL SIZE TIMEOUT_S
 *   ./loadgen 127.0.0.1 8000 50 20000 64 30
 *
 * It keeps IN_FLIGHT connections open until TOTAL requests are done: each
 * connects, sends SIZE bytes ending in '!', reads until the server closes,
 * and checks that the reply is the request reversed. One line of output:
 *
 *   total=20000 ok=20000 err=0 mismatch=0 timeout=0 elapsed=1.234 rps=16207 p50_ms=2.9 p99_ms=6.1 max_ms=9.0
 *
 * Linux (epoll) only; IPv4 addresses only. Exit status 0 when every request
 * was answered correctly, 1 otherwise, 2 for bad arguments.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct conn {
    int fd;
    size_t sent;      /* bytes of the request written */
    size_t received;  /* bytes of the reply read */
    int bad;          /* the reply differs from the expected one */
    double started;
};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int compare(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static struct sockaddr_in address;
static int epoll_fd;
static unsigned char *request, *expected;
static size_t size;

/* Open a non-blocking connection for c; 0 on success. */
static int start(struct conn *c) {
    memset(c, 0, sizeof *c);
    c->started = now();
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0)
        return -1;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, (struct sockaddr *)&address, sizeof address) < 0 && errno != EINPROGRESS) {
        close(c->fd);
        return -1;
    }
    struct epoll_event event = {.events = EPOLLOUT, .data.ptr = c};
    epoll_ctl(epoll_fd, EPOLL_CTL_ADD, c->fd, &event);
    return 0;
}

static long total, started, done, ok, errors, mismatches, timeouts;

/* Start the next request on slot c, if any is left; one that cannot start counts as an error. */
static void refill(struct conn *c) {
    c->fd = -1;
    while (started < total) {
        started++;
        if (start(c) == 0)
            return;
        c->fd = -1;
        errors++, done++;
    }
}

/* Move c on as far as its socket allows: 1 when it has finished (ok or not), 0 otherwise. */
static int step(struct conn *c, int *failed) {
    unsigned char buffer[65536];
    if (c->sent < size) {
        ssize_t n = send(c->fd, request + c->sent, size - c->sent, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINPROGRESS)
                return 0;
            *failed = 1;
            return 1;
        }
        c->sent += (size_t)n;
        if (c->sent == size) {
            struct epoll_event event = {.events = EPOLLIN, .data.ptr = c};
            epoll_ctl(epoll_fd, EPOLL_CTL_MOD, c->fd, &event);
        }
        return 0;
    }
    for (;;) {
        ssize_t n = recv(c->fd, buffer, sizeof buffer, 0);
        if (n < 0) {
            if (errno == EAGAIN)
                return 0;
            *failed = 1;
            return 1;
        }
        if (n == 0) /* the server has closed: the reply is complete */
            return 1;
        if (c->received + (size_t)n > size || memcmp(buffer, expected + c->received, (size_t)n) != 0)
            c->bad = 1;
        c->received += (size_t)n;
    }
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: %s HOST PORT IN_FLIGHT TOTAL SIZE TIMEOUT_S\n", argv[0]);
        return 2;
    }
    int in_flight = atoi(argv[3]);
    total = atol(argv[4]);
    size = (size_t)atol(argv[5]);
    double timeout = atof(argv[6]);
    address.sin_family = AF_INET;
    address.sin_port = htons((unsigned short)atoi(argv[2]));
    if (inet_pton(AF_INET, argv[1], &address.sin_addr) != 1 || in_flight < 1 || total < 1 || size < 1 ||
        timeout <= 0) {
        fprintf(stderr, "%s: bad arguments (HOST must be an IPv4 address)\n", argv[0]);
        return 2;
    }
    if (in_flight > total)
        in_flight = (int)total;
    request = malloc(size);
    expected = malloc(size);
    for (size_t i = 0; i + 1 < size; i++)
        request[i] = (unsigned char)('a' + i % 26);
    request[size - 1] = '!';
    for (size_t i = 0; i < size; i++)
        expected[i] = request[size - 1 - i];

    struct conn *conns = calloc((size_t)in_flight, sizeof *conns);
    double *latencies = malloc((size_t)total * sizeof *latencies);
    struct epoll_event *events = malloc((size_t)in_flight * sizeof *events);
    epoll_fd = epoll_create1(0);
    double began = now();
    for (int i = 0; i < in_flight; i++)
        refill(&conns[i]);
    while (done < total) {
        int ready = epoll_wait(epoll_fd, events, in_flight, 100);
        double moment = now();
        for (int i = 0; i < ready; i++) {
            struct conn *c = events[i].data.ptr;
            int failed = 0;
            if (!step(c, &failed))
                continue;
            close(c->fd);
            c->fd = -1;
            done++;
            if (failed)
                errors++;
            else if (c->bad || c->received != size)
                mismatches++;
            else
                latencies[ok++] = moment - c->started;
            refill(c);
        }
        for (int i = 0; i < in_flight; i++) { /* the time-outs, checked at most every 100 ms */
            struct conn *c = &conns[i];
            if (c->fd >= 0 && moment - c->started > timeout) {
                close(c->fd);
                c->fd = -1;
                timeouts++, done++;
                refill(c);
            }
        }
    }
    double elapsed = now() - began;
    qsort(latencies, (size_t)ok, sizeof *latencies, compare);
    double p50 = ok ? latencies[ok / 2] : 0, p99 = ok ? latencies[(long)(ok * 0.99)] : 0;
    double worst = ok ? latencies[ok - 1] : 0;
    printf("total=%ld ok=%ld err=%ld mismatch=%ld timeout=%ld elapsed=%.3f rps=%.0f p50_ms=%.1f p99_ms=%.1f max_ms=%.1f\n",
           total, ok, errors, mismatches, timeouts, elapsed, ok / elapsed, p50 * 1e3, p99 * 1e3, worst * 1e3);
    return ok == total ? 0 : 1;
}
