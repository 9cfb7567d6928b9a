/*
 * loadgen.c: the memcache load generator of `python -m memcachier.bench.compare`.
 *
 * Written in C so that one core of it can saturate memcached on another:
 * one thread, epoll, every connection a closed loop that keeps DEPTH
 * requests in flight.  compare.py builds it on demand (cc -O2); it runs
 * alone too:
 *
 *   loadgen -p PORT [-c CONNS=50] [-d DEPTH=1] [-r GET_RATIO=0.9]
 *           [-k KEYS=100000] [-s VALUE_BYTES=100] [-m KEYS_PER_GET=1] [-B]
 *           [-u USER -a PASS] [-t SECONDS=5] [-w WARMUP=1] [-n]
 *           [-x KEY_PREFIX=key:] [-S SEED]
 *
 *   -B     binary protocol (a multi-get is N GETKQ and a NOOP), else ASCII
 *   -u -a  binary: SASL PLAIN; ASCII: MemCachier's convention, a first
 *          "set USER 0 0 LEN\r\nPASS\r\n" answered STORED
 *   -n     do not store every key once before the run
 *
 * Only 127.0.0.1 is targeted.  A request is one get (of -m keys) or one
 * set; its latency runs from when it is queued to when its whole reply
 * has been read, into a log-linear histogram (exact below 1 ms, within
 * 0.2 % above).  Requests completed during the warm-up are not counted.
 * The one line on stdout:
 *
 *   requests_per_s=N keys_per_s=N hit_rate=F p50_us=N p90_us=N p99_us=N
 *   p999_us=N max_us=N requests=N errors=N seconds=F
 *
 * Exit status 0, or 1 with a message on stderr (refused login, a closed
 * connection, a reply that is not memcache).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PRELOAD_BATCH 512
#define KEY_DIGITS 8
#define MAX_PREFIX 200

/* options */
static int optPort, optConns = 50, optDepth = 1, optKeys = 100000, optValue = 100, optMget = 1;
static int optBinary, optPreload = 1;
static double optGetRatio = 0.9, optSeconds = 5, optWarmup = 1;
static const char *optUser, *optPass, *optPrefix = "key:";
static size_t prefixLen;
static uint64_t seed = 0x9E3779B97F4A7C15ull;

static char *valueBytes;

/* Histogram: latencies in microseconds.  Below LINEAR each microsecond is
 * a bucket; above, each power of two is split into SUB buckets. */
#define LINEAR 1024
#define SUB_BITS 9
#define SUB (1 << SUB_BITS)
#define MAX_EXP 40
#define BUCKETS (LINEAR + (MAX_EXP - 10 + 1) * SUB)
static uint64_t histogram[BUCKETS];
static uint64_t worstNs, requestsDone, getsDone, hitsDone, errorsDone;

typedef struct {
    uint64_t queuedNs;
    uint8_t isGet;
} pending_t;

typedef struct {
    int fd;
    int watchingOut;
    char *in; size_t inLen, inCap, inPos;
    char *out; size_t outLen, outPos, outCap;
    pending_t *ring; int ringCap, head, inflight;
    int partialHits; /* values read of the reply being parsed */
} conn_t;

static void fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("loadgen: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static uint64_t monotonicNs(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* xorshift64*: cheap, and the same sequence for the same -S */
static uint64_t nextRandom(void) {
    seed ^= seed >> 12;
    seed ^= seed << 25;
    seed ^= seed >> 27;
    return seed * 0x2545F4914F6CDD1Dull;
}

static void *grow(void *p, size_t n) {
    void *q = realloc(p, n);
    if (!q) fail("out of memory");
    return q;
}

static int bucketOf(uint64_t us) {
    if (us < LINEAR) return (int)us;
    int e = 63 - __builtin_clzll(us);
    if (e > MAX_EXP) return BUCKETS - 1;
    return LINEAR + (e - 10) * SUB + (int)((us >> (e - SUB_BITS)) - SUB);
}

static uint64_t lowerBoundOf(int b) {
    if (b < LINEAR) return (uint64_t)b;
    int e = 10 + (b - LINEAR) / SUB, s = (b - LINEAR) % SUB;
    return (uint64_t)(SUB + s) << (e - SUB_BITS);
}

static uint64_t percentile(double q) {
    if (requestsDone == 0) return 0;
    uint64_t want = (uint64_t)(q * (double)requestsDone + 0.999999), seen = 0;
    if (want == 0) want = 1;
    for (int b = 0; b < BUCKETS; b++) {
        seen += histogram[b];
        if (seen >= want) return lowerBoundOf(b);
    }
    return worstNs / 1000;
}

/* output buffer */
static void reserve(conn_t *c, size_t n) {
    if (c->outLen + n <= c->outCap) return;
    while (c->outLen + n > c->outCap) c->outCap *= 2;
    c->out = grow(c->out, c->outCap);
}

static void append(conn_t *c, const void *p, size_t n) {
    reserve(c, n);
    memcpy(c->out + c->outLen, p, n);
    c->outLen += n;
}

static size_t writeKey(char *to, uint64_t n) {
    memcpy(to, optPrefix, prefixLen);
    for (int i = KEY_DIGITS - 1; i >= 0; i--) {
        to[prefixLen + i] = (char)('0' + n % 10);
        n /= 10;
    }
    return prefixLen + KEY_DIGITS;
}

static void binaryHeader(conn_t *c, uint8_t opcode, size_t keyLen, uint8_t extrasLen, size_t bodyLen) {
    unsigned char h[24];
    memset(h, 0, sizeof h);
    h[0] = 0x80;
    h[1] = opcode;
    h[2] = (unsigned char)(keyLen >> 8);
    h[3] = (unsigned char)keyLen;
    h[4] = extrasLen;
    h[8] = (unsigned char)(bodyLen >> 24);
    h[9] = (unsigned char)(bodyLen >> 16);
    h[10] = (unsigned char)(bodyLen >> 8);
    h[11] = (unsigned char)bodyLen;
    append(c, h, sizeof h);
}

static void pushPending(conn_t *c, int isGet, uint64_t now) {
    if (c->inflight == c->ringCap) fail("internal: too many requests in flight");
    pending_t *p = &c->ring[(c->head + c->inflight) % c->ringCap];
    p->queuedNs = now;
    p->isGet = (uint8_t)isGet;
    c->inflight++;
}

static void queueSet(conn_t *c, uint64_t key, uint64_t now) {
    char k[MAX_PREFIX + KEY_DIGITS];
    size_t kl = writeKey(k, key);
    if (optBinary) {
        static const char extras[8];
        binaryHeader(c, 0x01, kl, 8, 8 + kl + (size_t)optValue);
        append(c, extras, 8);
        append(c, k, kl);
        append(c, valueBytes, (size_t)optValue);
    } else {
        char line[MAX_PREFIX + 64];
        int n = snprintf(line, sizeof line, "set %.*s 0 0 %d\r\n", (int)kl, k, optValue);
        append(c, line, (size_t)n);
        append(c, valueBytes, (size_t)optValue);
        append(c, "\r\n", 2);
    }
    pushPending(c, 0, now);
}

static void queueGet(conn_t *c, uint64_t now) {
    char k[MAX_PREFIX + KEY_DIGITS + 1];
    if (optBinary) {
        for (int i = 0; i < optMget; i++) {
            size_t kl = writeKey(k, nextRandom() % (uint64_t)optKeys);
            binaryHeader(c, optMget == 1 ? 0x00 : 0x0d, kl, 0, kl);
            append(c, k, kl);
        }
        if (optMget > 1) binaryHeader(c, 0x0a, 0, 0, 0);
    } else {
        append(c, "get", 3);
        k[0] = ' ';
        for (int i = 0; i < optMget; i++) {
            size_t kl = writeKey(k + 1, nextRandom() % (uint64_t)optKeys);
            append(c, k, kl + 1);
        }
        append(c, "\r\n", 2);
    }
    pushPending(c, 1, now);
}

static void queueRandom(conn_t *c, uint64_t now) {
    if ((double)(nextRandom() >> 11) * (1.0 / 9007199254740992.0) < optGetRatio)
        queueGet(c, now);
    else
        queueSet(c, nextRandom() % (uint64_t)optKeys, now);
}

/* Parse the reply to the oldest request in flight, if all of it has been
 * read: 1 (with *hits and *error set, c->inPos past it), else 0. */
static int parseReply(conn_t *c, int *hits, int *error) {
    if (optBinary) {
        for (;;) {
            size_t have = c->inLen - c->inPos;
            if (have < 24) return 0;
            const unsigned char *h = (const unsigned char *)c->in + c->inPos;
            if (h[0] != 0x81) fail("reply is not binary memcache (magic 0x%02x)", h[0]);
            size_t body = ((size_t)h[8] << 24) | ((size_t)h[9] << 16) | ((size_t)h[10] << 8) | h[11];
            if (have < 24 + body) return 0;
            int opcode = h[1], status = (h[6] << 8) | h[7];
            c->inPos += 24 + body;
            if (opcode == 0x0d || opcode == 0x09) { /* GETKQ / GETQ: a hit, more to come */
                if (status == 0) c->partialHits++;
                continue;
            }
            if (opcode == 0x00 || opcode == 0x0c) { /* GET / GETK: 1 = not found */
                if (status == 0) c->partialHits++;
                *error = status != 0 && status != 1;
            } else {
                *error = status != 0;
            }
            *hits = c->partialHits;
            c->partialHits = 0;
            return 1;
        }
    }
    for (;;) {
        char *start = c->in + c->inPos;
        char *nl = memchr(start, '\n', c->inLen - c->inPos);
        if (!nl) return 0;
        size_t lineLen = (size_t)(nl - start) + 1;
        if (lineLen > 6 && memcmp(start, "VALUE ", 6) == 0) {
            /* VALUE <key> <flags> <bytes> [<cas>]\r\n<data>\r\n */
            const char *p = start + 6;
            int field = 0;
            long bytes = -1;
            while (p < nl && field < 3) {
                while (p < nl && *p == ' ') p++;
                const char *token = p;
                while (p < nl && *p != ' ' && *p != '\r') p++;
                if (++field == 3 && p > token) bytes = strtol(token, NULL, 10);
            }
            if (bytes < 0) fail("bad VALUE line: %.*s", (int)(lineLen > 80 ? 80 : lineLen), start);
            size_t whole = lineLen + (size_t)bytes + 2;
            if (c->inLen - c->inPos < whole) return 0;
            c->inPos += whole;
            c->partialHits++;
            continue;
        }
        int ok = (lineLen == 5 && memcmp(start, "END\r\n", 5) == 0) ||
                 (lineLen == 8 && memcmp(start, "STORED\r\n", 8) == 0);
        if (!ok && errorsDone < 3)
            fprintf(stderr, "loadgen: server said: %.*s", (int)(lineLen > 120 ? 120 : lineLen), start);
        *error = !ok;
        *hits = c->partialHits;
        c->partialHits = 0;
        c->inPos += lineLen;
        return 1;
    }
}

static void compactInput(conn_t *c) {
    if (c->inPos == 0) return;
    memmove(c->in, c->in + c->inPos, c->inLen - c->inPos);
    c->inLen -= c->inPos;
    c->inPos = 0;
}

static ssize_t readSome(conn_t *c) {
    if (c->inCap - c->inLen < 16384) {
        c->inCap *= 2;
        c->in = grow(c->in, c->inCap);
    }
    return read(c->fd, c->in + c->inLen, c->inCap - c->inLen);
}

/* Blocking: send what is queued, wait for every reply; the errors. */
static int exchange(conn_t *c) {
    int errors = 0, hits, error;
    while (c->outPos < c->outLen) {
        ssize_t n = write(c->fd, c->out + c->outPos, c->outLen - c->outPos);
        if (n <= 0) fail("write to 127.0.0.1:%d: %s", optPort, n < 0 ? strerror(errno) : "closed");
        c->outPos += (size_t)n;
    }
    c->outPos = c->outLen = 0;
    while (c->inflight > 0) {
        while (c->inflight > 0 && parseReply(c, &hits, &error)) {
            c->head = (c->head + 1) % c->ringCap;
            c->inflight--;
            errors += error;
        }
        compactInput(c);
        if (c->inflight == 0) break;
        ssize_t n = readSome(c);
        if (n == 0) fail("127.0.0.1:%d closed the connection during setup", optPort);
        if (n < 0) fail("read from 127.0.0.1:%d during setup: %s", optPort, strerror(errno));
        c->inLen += (size_t)n;
    }
    return errors;
}

static void logIn(conn_t *c) {
    size_t ul = strlen(optUser), pl = strlen(optPass);
    if (optBinary) {
        binaryHeader(c, 0x21, 5, 0, 5 + 1 + ul + 1 + pl);
        append(c, "PLAIN", 5);
        append(c, "", 1);
        append(c, optUser, ul);
        append(c, "", 1);
        append(c, optPass, pl);
    } else {
        char line[600];
        int n = snprintf(line, sizeof line, "set %s 0 0 %zu\r\n", optUser, pl);
        append(c, line, (size_t)n);
        append(c, optPass, pl);
        append(c, "\r\n", 2);
    }
    pushPending(c, 0, 0);
    if (exchange(c)) fail("authentication as %s refused by 127.0.0.1:%d", optUser, optPort);
}

static void flush(int epfd, conn_t *c) {
    while (c->outPos < c->outLen) {
        ssize_t n = send(c->fd, c->out + c->outPos, c->outLen - c->outPos, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                if (!c->watchingOut) {
                    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
                    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
                    c->watchingOut = 1;
                }
                return;
            }
            fail("send to 127.0.0.1:%d: %s", optPort, strerror(errno));
        }
        c->outPos += (size_t)n;
    }
    c->outPos = c->outLen = 0;
    if (c->watchingOut) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
        c->watchingOut = 0;
    }
}

static void usage(void) {
    fputs("usage: loadgen -p PORT [-c CONNS] [-d DEPTH] [-r GET_RATIO] [-k KEYS] [-s VALUE_BYTES]\n"
          "               [-m KEYS_PER_GET] [-B] [-u USER -a PASS] [-t SECONDS] [-w WARMUP] [-n]\n"
          "               [-x KEY_PREFIX] [-S SEED]\n", stderr);
    exit(2);
}

int main(int argc, char **argv) {
    int o;
    while ((o = getopt(argc, argv, "p:c:d:r:k:s:m:Bu:a:t:w:nx:S:")) != -1) {
        switch (o) {
        case 'p': optPort = atoi(optarg); break;
        case 'c': optConns = atoi(optarg); break;
        case 'd': optDepth = atoi(optarg); break;
        case 'r': optGetRatio = atof(optarg); break;
        case 'k': optKeys = atoi(optarg); break;
        case 's': optValue = atoi(optarg); break;
        case 'm': optMget = atoi(optarg); break;
        case 'B': optBinary = 1; break;
        case 'u': optUser = optarg; break;
        case 'a': optPass = optarg; break;
        case 't': optSeconds = atof(optarg); break;
        case 'w': optWarmup = atof(optarg); break;
        case 'n': optPreload = 0; break;
        case 'x': optPrefix = optarg; break;
        case 'S': seed ^= strtoull(optarg, NULL, 0) * 0xBF58476D1CE4E5B9ull; if (!seed) seed = 1; break;
        default: usage();
        }
    }
    prefixLen = strlen(optPrefix);
    if (optind != argc || optPort <= 0 || optPort > 65535 || optConns < 1 || optDepth < 1 ||
        optKeys < 1 || optKeys > 99999999 || optValue < 0 || optValue > 1 << 20 || optMget < 1 ||
        optMget > 10000 || optGetRatio < 0 || optGetRatio > 1 || optSeconds <= 0 || optWarmup < 0 ||
        prefixLen > MAX_PREFIX || (!optUser) != (!optPass) || (optUser && strlen(optUser) > 250))
        usage();
    signal(SIGPIPE, SIG_IGN);
    alarm(300); /* connecting, logging in and storing the keys */

    valueBytes = malloc((size_t)optValue + 1);
    if (!valueBytes) fail("out of memory");
    memset(valueBytes, 'v', (size_t)optValue);

    conn_t *conns = calloc((size_t)optConns, sizeof *conns);
    if (!conns) fail("out of memory");
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)optPort);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (int i = 0; i < optConns; i++) {
        conn_t *c = &conns[i];
        c->inCap = 65536; c->in = grow(NULL, c->inCap);
        c->outCap = 65536; c->out = grow(NULL, c->outCap);
        c->ringCap = optDepth > PRELOAD_BATCH ? optDepth : PRELOAD_BATCH;
        c->ring = calloc((size_t)c->ringCap, sizeof *c->ring);
        if (!c->ring) fail("out of memory");
        c->fd = socket(AF_INET, SOCK_STREAM, 0);
        if (c->fd < 0) fail("socket: %s", strerror(errno));
        if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0)
            fail("connect to 127.0.0.1:%d: %s", optPort, strerror(errno));
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct timeval timeout = {.tv_sec = 30};
        setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
        if (optUser) logIn(c);
    }
    if (optPreload) {
        int errors = 0;
        for (int key = 0; key < optKeys;) {
            for (int b = 0; b < PRELOAD_BATCH && key < optKeys; b++, key++) queueSet(&conns[0], (uint64_t)key, 0);
            errors += exchange(&conns[0]);
        }
        if (errors) fail("%d of %d sets refused while storing the keys", errors, optKeys);
    }

    alarm((unsigned)(optWarmup + optSeconds) + 30);
    int epfd = epoll_create1(0);
    if (epfd < 0) fail("epoll_create1: %s", strerror(errno));
    for (int i = 0; i < optConns; i++) {
        conn_t *c = &conns[i];
        fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0) fail("epoll_ctl: %s", strerror(errno));
    }

    uint64_t begin = monotonicNs();
    uint64_t measureFrom = begin + (uint64_t)(optWarmup * 1e9);
    uint64_t end = measureFrom + (uint64_t)(optSeconds * 1e9);
    uint64_t measuredSince = begin;
    int measuring = optWarmup == 0;
    for (int i = 0; i < optConns; i++) {
        while (conns[i].inflight < optDepth) queueRandom(&conns[i], begin);
        flush(epfd, &conns[i]);
    }
    struct epoll_event events[256];
    for (;;) {
        int n = epoll_wait(epfd, events, 256, 20);
        if (n < 0 && errno != EINTR) fail("epoll_wait: %s", strerror(errno));
        uint64_t now = monotonicNs();
        if (!measuring && now >= measureFrom) {
            measuring = 1;
            measuredSince = now;
            memset(histogram, 0, sizeof histogram);
            worstNs = requestsDone = getsDone = hitsDone = errorsDone = 0;
        }
        if (now >= end) break;
        for (int i = 0; i < n; i++) {
            conn_t *c = events[i].data.ptr;
            if (events[i].events & (EPOLLERR | EPOLLHUP))
                fail("connection to 127.0.0.1:%d failed", optPort);
            if (events[i].events & EPOLLOUT) flush(epfd, c);
            if (!(events[i].events & EPOLLIN)) continue;
            ssize_t got = readSome(c);
            if (got == 0) fail("127.0.0.1:%d closed a connection", optPort);
            if (got < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) continue;
                fail("read from 127.0.0.1:%d: %s", optPort, strerror(errno));
            }
            c->inLen += (size_t)got;
            uint64_t t = monotonicNs();
            int hits, error, completed = 0;
            while (c->inflight > 0 && parseReply(c, &hits, &error)) {
                pending_t *p = &c->ring[c->head];
                c->head = (c->head + 1) % c->ringCap;
                c->inflight--;
                completed++;
                if (measuring) {
                    uint64_t ns = t - p->queuedNs;
                    histogram[bucketOf(ns / 1000)]++;
                    if (ns > worstNs) worstNs = ns;
                    requestsDone++;
                    getsDone += p->isGet;
                    hitsDone += (uint64_t)hits;
                    errorsDone += (uint64_t)error;
                }
            }
            compactInput(c);
            if (c->inflight == 0 && c->inLen > 0) fail("127.0.0.1:%d sent a reply to no request", optPort);
            if (completed) {
                while (c->inflight < optDepth) queueRandom(c, t);
                flush(epfd, c);
            }
        }
    }
    double seconds = (double)(monotonicNs() - measuredSince) / 1e9;
    uint64_t keys = getsDone * (uint64_t)optMget + (requestsDone - getsDone);
    double lookups = (double)getsDone * optMget;
    fprintf(stderr, "loadgen: %s 127.0.0.1:%d conns=%d depth=%d get_ratio=%.2f keys_per_get=%d keys=%d value=%d\n",
            optBinary ? "binary" : "ascii", optPort, optConns, optDepth, optGetRatio, optMget, optKeys, optValue);
    printf("requests_per_s=%.0f keys_per_s=%.0f hit_rate=%.4f p50_us=%llu p90_us=%llu p99_us=%llu "
           "p999_us=%llu max_us=%llu requests=%llu errors=%llu seconds=%.3f\n",
           requestsDone / seconds, keys / seconds, lookups > 0 ? hitsDone / lookups : 0.0,
           (unsigned long long)percentile(0.5), (unsigned long long)percentile(0.9),
           (unsigned long long)percentile(0.99), (unsigned long long)percentile(0.999),
           (unsigned long long)(worstNs / 1000), (unsigned long long)requestsDone,
           (unsigned long long)errorsDone, seconds);
    return 0;
}
