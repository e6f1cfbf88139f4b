/* incrhog: a benchmark target for bench_incremental.py.
 *
 *   incrhog SIZE_MIB STATEDIR [HOT_PERCENT]
 *
 * SIZE_MIB MiB of private anonymous memory filled like memhog.c (per 1 MiB
 * block: half written zeros, a quarter random, a quarter 16 repeated pattern
 * pages); writes STATEDIR/ready ("ADDR NPAGES").  Then:
 *   SIGUSR1: rewrite 1% of the pages (random pages, random data); write the
 *            page indices to STATEDIR/dirty-<n> (n counts rounds).
 *   SIGUSR2: toggle work mode: random 64-byte updates at random pages of a hot
 *            set (HOT_PERCENT of the pages, spread over the area; default
 *            100) as fast as possible; when toggled off, STATEDIR/ops-<n>
 *            gets "OPS SECONDS".
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096
static volatile sig_atomic_t usr1, usr2;
static void on1(int s) { (void)s; usr1 = 1; }
static void on2(int s) { (void)s; usr2 = 1; }
static uint64_t rng = 88172645463325252ULL;
static inline uint64_t nx(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng; }
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }

static void put(const char *dir, const char *name, const char *text)
{
    char p[4096], t[4200];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    snprintf(t, sizeof t, "%s.tmp", p);
    FILE *f = fopen(t, "w");
    fputs(text, f);
    fclose(f);
    rename(t, p);
}

int main(int argc, char **argv)
{
    size_t size = (size_t)strtoull(argv[1], NULL, 10) << 20, np = size / PAGE;
    const char *dir = argv[2];
    size_t hot = argc > 3 ? np * strtoull(argv[3], NULL, 10) / 100 : np, stride = np / (hot ? hot : 1);
    uint8_t *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    static uint8_t pat[16][PAGE];
    for (int k = 0; k < 16; k++)
        for (int j = 0; j < PAGE; j++)
            pat[k][j] = (uint8_t)((j % 4 == 0) ? k * 7 + j : (j * 2654435761u) >> (k + 8));
    for (size_t p = 0; p < np; p++) {
        size_t b = (p * PAGE) >> 20;
        if (b % 4 < 2)
            memset(m + p * PAGE, 0, PAGE);
        else if (b % 4 == 2)
            for (int j = 0; j < PAGE; j += 8) { uint64_t v = nx(); memcpy(m + p * PAGE + j, &v, 8); }
        else
            memcpy(m + p * PAGE, pat[p % 16], PAGE);
    }
    signal(SIGUSR1, on1);
    signal(SIGUSR2, on2);
    char buf[128];
    snprintf(buf, sizeof buf, "%lu %zu\n", (unsigned long)m, np);
    put(dir, "ready", buf);
    int round = 0, working = 0, wround = 0;
    uint64_t ops = 0;
    double t0 = 0;
    for (;;) {
        if (usr1) {
            usr1 = 0;
            round++;
            size_t n = np / 100;
            char *out = malloc(n * 24 + 16), *o = out;
            for (size_t i = 0; i < n; i++) {
                size_t p = nx() % np;
                for (int j = 0; j < PAGE; j += 8) { uint64_t v = nx(); memcpy(m + p * PAGE + j, &v, 8); }
                o += sprintf(o, "%zu\n", p);
            }
            char name[64];
            snprintf(name, sizeof name, "dirty-%d", round);
            put(dir, name, out);
            free(out);
        }
        if (usr2) {
            usr2 = 0;
            working = !working;
            if (working) {
                ops = 0;
                t0 = now();
            } else {
                char name[64];
                snprintf(name, sizeof name, "ops-%d", ++wround);
                snprintf(buf, sizeof buf, "%llu %.6f\n", (unsigned long long)ops, now() - t0);
                put(dir, name, buf);
            }
        }
        if (working) {
            for (int i = 0; i < 4096; i++) {
                uint64_t r = nx();
                uint64_t *w = (uint64_t *)(m + ((r % hot) * stride) * PAGE + ((r >> 40) % 64) * 64);
                w[0] += r; w[1] ^= r; w[2] += 1; w[3] = r; w[4] += 3; w[5] ^= 7; w[6] += r >> 3; w[7] = ~r;
            }
            ops += 4096;
        } else {
            usleep(1000);
        }
    }
}
