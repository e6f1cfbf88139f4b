/* A program for daemon tests: counts ticks and keeps its output on disk.
 *
 *   counter DIR [PERIOD_MS [BIG_MB]]
 *
 * Every PERIOD_MS (default 20) it increments its counter and
 *   - appends "N\n" to DIR/log (opened once, O_APPEND): after a rollback that
 *     cut the log back to the round, the log stays 1, 2, 3 ... with no
 *     repeated or missing line;
 *   - writes N (fixed width) at offset 0 of DIR/count (opened once, O_RDWR).
 * It also keeps a 1 MiB heap buffer whose checksum it verifies every tick
 * (memory restored wrong -> it writes DIR/FAIL and stops counting).
 * BIG_MB: that many MiB of incompressible heap (makes a dump take a while).
 * It writes its PID to DIR/ready after the first tick.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BUF (1 << 20)

static void put(const char *dir, const char *name, const char *text)
{
    char p[4096], t[4096];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    snprintf(t, sizeof t, "%s/%s.tmp", dir, name);
    int fd = open(t, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return;
    if (write(fd, text, strlen(text)) < 0) { /* best effort */ }
    close(fd);
    rename(t, p);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: counter DIR [PERIOD_MS]\n");
        return 2;
    }
    const char *dir = argv[1];
    long period = argc > 2 ? atol(argv[2]) : 20;
    char path[4096];
    snprintf(path, sizeof path, "%s/log", dir);
    int log = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    snprintf(path, sizeof path, "%s/count", dir);
    int cnt = open(path, O_RDWR | O_CREAT, 0644);
    if (log < 0 || cnt < 0) {
        perror("open");
        return 1;
    }
    long big = argc > 3 ? atol(argv[3]) : 0;
    if (big > 0) {
        unsigned long long *b = malloc(big << 20), x = 88172645463325252ULL;
        for (long i = 0; i < (big << 20) / 8; i++) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;  /* xorshift64 */
            b[i] = x;
        }
    }
    unsigned char *buf = malloc(BUF);
    unsigned long sum = 0;
    for (int i = 0; i < BUF; i++) {
        buf[i] = (unsigned char)(i * 7 + 3);
        sum += buf[i];
    }
    unsigned long n = 0;
    struct timespec ts = {period / 1000, (period % 1000) * 1000000L};
    for (;;) {
        n++;
        buf[n % BUF] ^= 0x5a;  /* keep the buffer changing, with a known sum */
        buf[n % BUF] ^= 0x5a;
        unsigned long s = 0;
        for (int i = 0; i < BUF; i += 4096)
            s += buf[i];
        unsigned long want = 0;
        for (int i = 0; i < BUF; i += 4096)
            want += (unsigned char)(i * 7 + 3);
        if (s != want) {
            put(dir, "FAIL", "heap checksum mismatch\n");
            pause();
        }
        char line[32];
        int len = snprintf(line, sizeof line, "%lu\n", n);
        if (write(log, line, len) != len)
            put(dir, "FAIL", "short write to log\n");
        len = snprintf(line, sizeof line, "%20lu\n", n);
        if (pwrite(cnt, line, len, 0) != len)
            put(dir, "FAIL", "short write to count\n");
        if (n == 1) {
            char pid[32];
            snprintf(pid, sizeof pid, "%d\n", (int)getpid());
            put(dir, "ready", pid);
        }
        nanosleep(&ts, NULL);
    }
    (void)sum;
}
