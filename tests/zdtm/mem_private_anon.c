/*
 * mem_private_anon: private anonymous memory.
 *
 * A 64 MiB MAP_PRIVATE|MAP_ANONYMOUS area is filled with a pseudo-random
 * pattern, a 1 MiB area is filled and then made read-only, and while waiting
 * the loop keeps appending to a "journal" array (so memory changes right up
 * to the dump).  After go: every word of both areas and the journal must be
 * intact, the protections unchanged (rw-p / r--p), and the area must still
 * be private (a forked child's writes are not seen by the parent).
 */
#include "zdtm.h"
#include <sys/mman.h>
#include <sys/wait.h>

#define AREA_SIZE (64UL << 20)
#define RO_SIZE (1UL << 20)
#define JOURNAL 4096

static uint64_t journal[JOURNAL];

int main(int argc, char **argv)
{
	size_t nwords = AREA_SIZE / 8, i;
	uint64_t *area, *ro, iter = 0;
	char perms[5];

	zdtm_init(argc, argv);
	area = mmap(NULL, AREA_SIZE, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ro = mmap(NULL, RO_SIZE, PROT_READ | PROT_WRITE,
		  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (area == MAP_FAILED || ro == MAP_FAILED)
		return perror("mmap"), 1;
	for (i = 0; i < nwords; i++)
		area[i] = zdtm_mix(i);
	for (i = 0; i < RO_SIZE / 8; i++)
		ro[i] = zdtm_mix(i + (1ULL << 40));
	mprotect(ro, RO_SIZE, PROT_READ);

	zdtm_ready();
	while (!zdtm_go()) {
		/* work: extend the journal and spot-check one page */
		for (int k = 0; k < 64; k++, iter++)
			journal[iter % JOURNAL] = zdtm_mix(iter ^ 0x5555);
		size_t page = zdtm_mix(iter) % (AREA_SIZE / 4096);
		for (i = page * 512; i < page * 512 + 512; i++)
			if (area[i] != zdtm_mix(i)) {
				fail("area word %zu changed while running", i);
				break;
			}
		zdtm_sleep_ms(1);
	}

	for (i = 0; i < nwords; i++)
		if (area[i] != zdtm_mix(i)) {
			fail("area word %zu: %#lx != %#lx", i, area[i], zdtm_mix(i));
			break;
		}
	for (i = 0; i < RO_SIZE / 8; i++)
		if (ro[i] != zdtm_mix(i + (1ULL << 40))) {
			fail("read-only area word %zu changed", i);
			break;
		}
	for (uint64_t k = iter > JOURNAL ? iter - JOURNAL : 0; k < iter; k++)
		if (journal[k % JOURNAL] != zdtm_mix(k ^ 0x5555)) {
			fail("journal entry %lu wrong (iter %lu)", k, iter);
			break;
		}
	CHECK(!strcmp(zdtm_maps_perms(area, perms), "rw-p"), "area perms %s", perms);
	CHECK(!strcmp(zdtm_maps_perms((char *)area + AREA_SIZE - 1, perms), "rw-p"),
	      "area end perms %s", perms);
	CHECK(!strcmp(zdtm_maps_perms(ro, perms), "r--p"), "ro perms %s", perms);

	/* still private: a child's write must not show up here */
	pid_t child = fork();
	if (child == 0) {
		area[7] = 0;
		_exit(0);
	}
	waitpid(child, NULL, 0);
	CHECK(area[7] == zdtm_mix(7), "private area changed by a child's write");
	return zdtm_finish();
}
