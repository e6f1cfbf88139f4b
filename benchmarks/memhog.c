/* memhog: a benchmark target for bench_dump_restore.py.
 *
 *   memhog SIZE_MIB READY_FILE CHECKSUM_FILE
 *
 * mmaps SIZE_MIB MiB of private anonymous memory and fills it in 1 MiB blocks
 * (block b): b % 4 in {0, 1}: written zeros (resident, not the zero page);
 * b % 4 == 2: pseudo-random bytes; b % 4 == 3: a repeated pattern, page i of
 * the block getting one of 16 distinct pattern pages (global page index % 16).
 * So half is zero, a quarter random, a quarter pattern.
 * Then it writes "PID CHECKSUM\n" to READY_FILE and sleeps.  On SIGUSR1 it
 * recomputes the checksum of the whole region and writes "CHECKSUM\n" to
 * CHECKSUM_FILE (via a temporary file and rename).
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
#define BLOCK (1 << 20)
#define NPATTERNS 16

static volatile sig_atomic_t want_sum;

static void on_usr1(int sig) { (void)sig; want_sum = 1; }

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* 4 independent multiply-xor lanes, combined: fast and order-sensitive. */
static uint64_t checksum(const uint64_t *w, size_t nwords)
{
    uint64_t h[4] = {1, 2, 3, 4};
    for (size_t i = 0; i < nwords; i += 4)
        for (int l = 0; l < 4; l++)
            h[l] = (h[l] ^ w[i + l]) * 0x100000001B3ULL + i;
    return h[0] ^ (h[1] * 3) ^ (h[2] * 5) ^ (h[3] * 7);
}

static int write_file(const char *path, const char *text)
{
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return -1;
    fputs(text, f);
    if (fclose(f) != 0)
        return -1;
    return rename(tmp, path);
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: memhog SIZE_MIB READY_FILE CHECKSUM_FILE\n");
        return 2;
    }
    size_t size = (size_t)strtoull(argv[1], NULL, 10) << 20;
    uint8_t *mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        perror("mmap");
        return 1;
    }

    /* 16 distinct pattern pages, each looking like an array of small records */
    static uint32_t patterns[NPATTERNS][PAGE / 4];
    for (int k = 0; k < NPATTERNS; k++)
        for (int j = 0; j < PAGE / 4; j++)
            patterns[k][j] = (j % 4 == 0) ? (uint32_t)(k * 100000 + j) : (uint32_t)((j * 2654435761u) >> (k + 8));

    uint64_t seed = 0x5eed;
    for (size_t off = 0; off < size; off += BLOCK) {
        size_t len = size - off < BLOCK ? size - off : BLOCK;
        switch ((off / BLOCK) % 4) {
        case 0:
        case 1:
            memset(mem + off, 0, len); /* written: resident zero pages */
            break;
        case 2:
            for (size_t i = 0; i < len; i += 8) {
                uint64_t v = splitmix(&seed);
                memcpy(mem + off + i, &v, 8);
            }
            break;
        default:
            for (size_t i = 0; i < len; i += PAGE)
                memcpy(mem + off + i, patterns[((off + i) / PAGE) % NPATTERNS], PAGE);
        }
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);

    char line[128];
    snprintf(line, sizeof(line), "%d %016llx\n", (int)getpid(),
             (unsigned long long)checksum((const uint64_t *)mem, size / 8));
    if (write_file(argv[2], line) != 0) {
        perror("ready file");
        return 1;
    }
    for (;;) {
        if (want_sum) {
            want_sum = 0;
            snprintf(line, sizeof(line), "%016llx\n",
                     (unsigned long long)checksum((const uint64_t *)mem, size / 8));
            if (write_file(argv[3], line) != 0)
                perror("checksum file");
        }
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
