/* genwriter: a program whose memory moves through numbered generations,
 * for the storage tests (chains, dedup, crash safety).
 *
 *   genwriter STATEDIR NPAGES SEED
 *
 * Maps NPAGES pages and fills page i with content(gen 0, i, SEED).  On
 * SIGUSR1 it enters the next generation: rewrites about a tenth of the pages
 * (chosen from the generation number) and records, in its own memory, the
 * generation of every page; then it writes STATEDIR/gen ("GEN SUM\n", via a
 * temporary file and rename) with a checksum of the whole area.  When
 * STATEDIR/go appears it checks every page against the generation recorded
 * for it and writes STATEDIR/result: "PASS GEN SUM" or "FAIL ...".  Restored
 * from the snapshot of generation g, it must report g and that generation's
 * checksum.  Same SEED, same NPAGES: same data (for the dedup tests). */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGE 4096

static volatile sig_atomic_t advance;
static char dir[4096];

static void on_usr1(int s) { (void)s; advance = 1; }

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33; x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ULL;
    return x ^ (x >> 33);
}

static void fill(uint64_t *p, uint64_t gen, uint64_t i, uint64_t seed)
{
    uint64_t x = mix(seed * 1000003 + i * 7919 + gen * 104729 + 1);
    for (int k = 0; k < PAGE / 8; k++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        /* half of each page compressible, half not */
        p[k] = k < PAGE / 16 ? (gen << 32 | i) : x;
    }
}

static uint64_t checksum(const uint64_t *a, size_t words)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t k = 0; k < words; k++)
        h = (h ^ a[k]) * 1099511628211ULL;
    return h;
}

static void put(const char *name, const char *text)
{
    char tmp[4200], path[4200];
    snprintf(tmp, sizeof tmp, "%s/%s.tmp", dir, name);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(tmp, "w");
    if (!f)
        exit(2);
    fputs(text, f);
    fclose(f);
    rename(tmp, path);
}

int main(int argc, char **argv)
{
    if (argc != 4)
        return 2;
    snprintf(dir, sizeof dir, "%s", argv[1]);
    size_t n = strtoul(argv[2], 0, 0);
    uint64_t seed = strtoull(argv[3], 0, 0);
    uint64_t *mem = mmap(0, n * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    uint32_t *pgen = calloc(n, sizeof *pgen);
    if (mem == MAP_FAILED || !pgen)
        return 2;
    uint64_t gen = 0;
    for (size_t i = 0; i < n; i++)
        fill(mem + i * (PAGE / 8), 0, i, seed);
    signal(SIGUSR1, on_usr1);
    char line[128];
    snprintf(line, sizeof line, "%lu %016lx\n", (unsigned long)gen, (unsigned long)checksum(mem, n * PAGE / 8));
    put("gen", line);
    put("ready", "ready\n");
    char go[4200];
    snprintf(go, sizeof go, "%s/go", dir);
    for (;;) {
        if (advance) {
            advance = 0;
            gen++;
            for (size_t i = 0; i < n; i++)
                if (mix(gen * 31 + i) % 10 == 0) {
                    fill(mem + i * (PAGE / 8), gen, i, seed);
                    pgen[i] = (uint32_t)gen;
                }
            snprintf(line, sizeof line, "%lu %016lx\n", (unsigned long)gen,
                     (unsigned long)checksum(mem, n * PAGE / 8));
            put("gen", line);
        }
        if (access(go, F_OK) == 0)
            break;
        usleep(5000);
    }
    uint64_t *want = malloc(PAGE);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        fill(want, pgen[i], i, seed);
        bad += memcmp(want, mem + i * (PAGE / 8), PAGE) != 0;
    }
    if (bad)
        snprintf(line, sizeof line, "FAIL %zu of %zu pages differ from their generation\n", bad, n);
    else
        snprintf(line, sizeof line, "PASS %lu %016lx\n", (unsigned long)gen,
                 (unsigned long)checksum(mem, n * PAGE / 8));
    put("result", line);
    return 0;
}
