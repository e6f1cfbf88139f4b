/*
 * incr_new_vma_flags: a mapping born between two snapshots, right after one
 * that is tracked, with flags of its own.
 *
 * Generation 0 maps area A (1 MiB, rw, with 1 MiB free after it), filled
 * with data.  On SIGUSR1 (generation 1) it maps area B (1 MiB, rw) right
 * after A, fills it, and marks it MADV_DONTFORK, then records sum-1.  A snapshotter that takes B's flags from its neighbour A (they
 * differ only by "dc") must notice after the release and fail that dump.
 * After go, a restored process checks both areas against sum-<gen> and that
 * B still has the "dc" flag in /proc/self/smaps.
 */
#include "zdtm.h"
#include <signal.h>
#include <sys/mman.h>

#define MB (1UL << 20)

static volatile sig_atomic_t steps;
static void on_usr1(int sig) { (void)sig; steps++; }

static void fill(uint64_t *w, uint64_t seed)
{
	for (size_t k = 0; k < MB / 8; k++) {
		seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
		w[k] = seed;
	}
}

static uint64_t checksum(const uint64_t *w, size_t n, uint64_t h)
{
	for (size_t k = 0; k < n / 8; k++)
		h = (h ^ w[k]) * 1099511628211ULL;
	return h;
}

/* 1 if the smaps entry starting at addr lists VmFlag flag */
static int has_vmflag(void *addr, const char *flag)
{
	char line[512], start[32];
	int in = 0, found = 0;
	FILE *f = fopen("/proc/self/smaps", "r");
	if (!f)
		return -1;
	snprintf(start, sizeof(start), "%lx-", (unsigned long)addr);
	while (fgets(line, sizeof(line), f)) {
		if (strchr(line, '-') && strncmp(line, start, strlen(start)) == 0)
			in = 1;
		else if (in && strncmp(line, "VmFlags:", 8) == 0) {
			found = strstr(line, flag) != NULL;
			break;
		}
	}
	fclose(f);
	return found;
}

int main(int argc, char **argv)
{
	char name[32], text[64], path[PATH_MAX], want[64];
	int gen = 0;
	uint8_t *a, *b = NULL;

	zdtm_init(argc, argv);
	a = mmap(NULL, 2 * MB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (a == MAP_FAILED || munmap(a + MB, MB))
		return perror("mmap A"), 1;
	fill((uint64_t *)a, 0x1234567);
	snprintf(text, sizeof(text), "%016llx\n", (unsigned long long)checksum((uint64_t *)a, MB, 1));
	zdtm_write_file("sum-0", text);
	signal(SIGUSR1, on_usr1);
	zdtm_ready();
	while (!zdtm_go()) {
		if (steps && !gen) {
			gen = 1;
			b = mmap(a + MB, MB, PROT_READ | PROT_WRITE,
				 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
			if (b == MAP_FAILED) {
				fail("mmap B: %s", strerror(errno));
				break;
			}
			fill((uint64_t *)b, 0x7654321);
			if (madvise(b, MB, MADV_DONTFORK))
				fail("madvise: %s", strerror(errno));
			snprintf(text, sizeof(text), "%016llx\n",
				 (unsigned long long)checksum((uint64_t *)b, MB, checksum((uint64_t *)a, MB, 1)));
			zdtm_write_file("sum-1", text);
		}
		zdtm_sleep_ms(2);
	}
	snprintf(name, sizeof(name), "sum-%d", gen);
	if (zdtm_read(zdtm_path(name, path, sizeof(path)), want, sizeof(want)) < 0)
		fail("no %s", name);
	uint64_t h = checksum((uint64_t *)a, MB, 1);
	if (gen)
		h = checksum((uint64_t *)b, MB, h);
	snprintf(text, sizeof(text), "%016llx\n", (unsigned long long)h);
	CHECK(strcmp(want, text) == 0, "generation %d: areas sum to %s, recorded %s", gen, text, want);
	if (gen)
		CHECK(has_vmflag(b, " dc") == 1, "area B lost MADV_DONTFORK");
	return zdtm_finish();
}
