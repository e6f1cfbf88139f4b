/*
 * incr_cow_consistent: a snapshot is one instant, even while the process writes.
 *
 * One thread sweeps a 64 MiB area without pause: in pass k it stores k into
 * the first word of page p, then sets pos = p + 1.  So at every instant,
 * pages below pos hold k and pages from pos on hold k - 1 (page pos itself
 * may already hold k).  A capture that read memory while the sweep went on
 * would catch pages from later passes.  After restore the program checks the
 * invariant as soon as it runs again: it polls for go every 256 pages, and
 * checks (then finishes) without further writes.
 */
#include "zdtm.h"
#include <sys/mman.h>

#define PG 4096UL
#define AREA (64UL << 20)
#define NP (AREA / PG)

static volatile uint64_t *area;
static volatile uint64_t k = 1;
static volatile size_t pos;

int main(int argc, char **argv)
{
	zdtm_init(argc, argv);
	area = mmap(NULL, AREA, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (area == MAP_FAILED)
		return perror("mmap"), 1;
	for (size_t p = 0; p < NP; p++)
		area[p * (PG / 8)] = 0; /* pass 0 */
	zdtm_ready();
	for (;;) {
		for (pos = 0; pos < NP;) {
			area[pos * (PG / 8)] = k;
			pos = pos + 1;
			if (pos % 256 == 0 && zdtm_go())
				goto check;
		}
		k = k + 1;
	}
check:;
	size_t bad = 0, first = 0;
	for (size_t p = 0; p < NP; p++) {
		uint64_t v = area[p * (PG / 8)];
		uint64_t want = p < pos ? k : k - 1;
		if (v != want && !(p == pos && v == k)) {
			if (!bad++)
				first = p;
		}
	}
	CHECK(!bad, "%zu pages break the sweep invariant (first %zu: %llu, pass %llu, pos %zu)", bad, first,
	      (unsigned long long)area[first * (PG / 8)], (unsigned long long)k, (size_t)pos);
	return zdtm_finish();
}
