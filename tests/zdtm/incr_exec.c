/*
 * incr_exec: exec between two snapshots (a new address space under a tracker).
 *
 * Generation 0 fills 8 MiB with data seeded by 0 and records sum-0.  On
 * SIGUSR1 the program execs itself with generation 1, which fills 8 MiB
 * (somewhere else, with other data) and records sum-1.  A restored process
 * checks, after go, that its area sums to sum-<gen>.
 */
#include "zdtm.h"
#include <signal.h>
#include <sys/mman.h>

#define AREA (8UL << 20)

static volatile sig_atomic_t want_exec;
static void on_usr1(int sig) { (void)sig; want_exec = 1; }

static uint64_t checksum(const uint64_t *w, int gen)
{
	uint64_t h = 1469598103934665603ULL ^ (uint64_t)gen;
	for (size_t k = 0; k < AREA / 8; k++)
		h = (h ^ w[k]) * 1099511628211ULL;
	return h;
}

int main(int argc, char **argv)
{
	int gen = argc > 2 ? atoi(argv[2]) : 0;
	char name[64], text[64], path[PATH_MAX], want[64];
	uint64_t s = 0x2545F4914F6CDD1DULL + (uint64_t)gen, *a;

	zdtm_init(argc, argv);
	/* a different size first, so the area lands elsewhere after exec */
	if (gen)
		mmap(NULL, 3UL << 20, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	a = mmap(NULL, AREA, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (a == MAP_FAILED)
		return perror("mmap"), 1;
	for (size_t k = 0; k < AREA / 8; k++) {
		s ^= s << 13, s ^= s >> 7, s ^= s << 17;
		a[k] = k % 3 ? s : 0;
	}
	snprintf(name, sizeof(name), "sum-%d", gen);
	snprintf(text, sizeof(text), "%016llx\n", (unsigned long long)checksum(a, gen));
	zdtm_write_file(name, text);
	signal(SIGUSR1, on_usr1);
	if (!gen)
		zdtm_ready();
	while (!zdtm_go()) {
		if (want_exec && !gen) {
			char *args[] = {argv[0], argv[1], "1", NULL};
			execv("/proc/self/exe", args);
			fail("execv: %s", strerror(errno));
			break;
		}
		zdtm_sleep_ms(2);
	}
	if (zdtm_read(zdtm_path(name, path, sizeof(path)), want, sizeof(want)) < 0)
		fail("no %s", name);
	snprintf(text, sizeof(text), "%016llx\n", (unsigned long long)checksum(a, gen));
	CHECK(strcmp(want, text) == 0, "generation %d: area sums to %s, recorded %s", gen, text, want);
	return zdtm_finish();
}
