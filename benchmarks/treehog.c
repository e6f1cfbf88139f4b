/* treehog: a process-tree benchmark target for bench_tree.py.
 *
 *   treehog SIZE_MIB NPROC DIR
 *
 * The root maps SIZE_MIB/2 MiB of MAP_SHARED|MAP_ANONYMOUS memory and
 * SIZE_MIB/2 MiB of private anonymous memory, fills both in 1 MiB blocks
 * (even blocks pseudo-random, odd blocks zeros written), then forks NPROC-1
 * children that read every page of both (so every process maps all of it:
 * the private pages are shared copy-on-write).  Each process writes
 * DIR/ready.N when set up (N = 0 for the root), and on SIGUSR1 a checksum of
 * both regions to DIR/sum.N (tmp + rename).  Processes sleep otherwise.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define BLOCK (1 << 20)

static volatile sig_atomic_t want_sum;
static void on_usr1(int sig) { (void)sig; want_sum = 1; }

static uint64_t mix(uint64_t z)
{
    z += 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static uint64_t sum(const uint64_t *p, size_t n)
{
    uint64_t h = 0;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001B3ULL + i;
    return h;
}

static void put(const char *dir, const char *name, int idx, const char *text)
{
    char tmp[4096], fin[4096];
    snprintf(tmp, sizeof(tmp), "%s/.%s.%d.tmp", dir, name, idx);
    snprintf(fin, sizeof(fin), "%s/%s.%d", dir, name, idx);
    FILE *f = fopen(tmp, "w");
    if (!f || fputs(text, f) < 0 || fclose(f))
        exit(3);
    rename(tmp, fin);
}

int main(int argc, char **argv)
{
    if (argc != 4)
        return 2;
    size_t half = (size_t)atoi(argv[1]) * BLOCK / 2;
    int nproc = atoi(argv[2]), idx = 0;
    const char *dir = argv[3];
    signal(SIGUSR1, on_usr1);
    uint64_t *sh = mmap(NULL, half, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    uint64_t *pr = mmap(NULL, half, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED || pr == MAP_FAILED)
        return 2;
    size_t words = half / 8, per_block = BLOCK / 8;
    for (size_t i = 0; i < words; i++) {
        int rnd = (i / per_block) % 2 == 0;
        sh[i] = rnd ? mix(i) : 0;
        pr[i] = rnd ? mix(i + words) : 0;
    }
    for (int c = 1; c < nproc; c++) {
        if (fork() == 0) {
            idx = c;
            break;
        }
    }
    volatile uint64_t touch = 0;
    for (size_t i = 0; i < words; i += 512)
        touch += sh[i] + pr[i];
    char text[64];
    snprintf(text, sizeof(text), "%d\n", getpid());
    put(dir, "ready", idx, text);
    for (;;) {
        pause();
        if (want_sum) {
            want_sum = 0;
            snprintf(text, sizeof(text), "%016llx\n",
                     (unsigned long long)(sum(sh, words) ^ (sum(pr, words) * 3)));
            put(dir, "sum", idx, text);
        }
    }
}
