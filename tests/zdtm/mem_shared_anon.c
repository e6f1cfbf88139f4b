/*
 * mem_shared_anon: shared anonymous memory (MAP_SHARED|MAP_ANONYMOUS).
 *
 * A 16 MiB shared anonymous area is filled with a pattern and a second view
 * of the same memory is made with mremap(old_size = 0).  The loop keeps
 * writing a journal into the area.  After go: the content is intact, both
 * views are still "rw-s" and still share memory (a write through one is seen
 * through the other), and a forked child's write is seen by the parent.
 */
#include "zdtm.h"
#include <sys/mman.h>
#include <sys/wait.h>

#define AREA_SIZE (16UL << 20)
#define JOURNAL_WORDS 4096 /* last 32 KiB of the area */

int main(int argc, char **argv)
{
	size_t nwords = AREA_SIZE / 8 - JOURNAL_WORDS, i;
	uint64_t *area, *view, *journal, iter = 0;
	char perms[5];

	zdtm_init(argc, argv);
	area = mmap(NULL, AREA_SIZE, PROT_READ | PROT_WRITE,
		    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (area == MAP_FAILED)
		return perror("mmap"), 1;
	view = mremap(area, 0, AREA_SIZE, MREMAP_MAYMOVE);
	if (view == MAP_FAILED)
		return perror("mremap"), 1;
	journal = area + nwords;
	for (i = 0; i < nwords; i++)
		area[i] = zdtm_mix(i ^ 0xabc);

	zdtm_ready();
	while (!zdtm_go()) {
		for (int k = 0; k < 64; k++, iter++)
			journal[iter % JOURNAL_WORDS] = zdtm_mix(iter);
		zdtm_sleep_ms(1);
	}

	for (i = 0; i < nwords; i++)
		if (area[i] != zdtm_mix(i ^ 0xabc) || view[i] != area[i]) {
			fail("word %zu: area %#lx view %#lx expected %#lx", i,
			     area[i], view[i], zdtm_mix(i ^ 0xabc));
			break;
		}
	for (uint64_t k = iter > JOURNAL_WORDS ? iter - JOURNAL_WORDS : 0; k < iter; k++)
		if (journal[k % JOURNAL_WORDS] != zdtm_mix(k)) {
			fail("journal entry %lu wrong", k);
			break;
		}
	CHECK(!strcmp(zdtm_maps_perms(area, perms), "rw-s"), "area perms %s", perms);
	CHECK(!strcmp(zdtm_maps_perms(view, perms), "rw-s"), "view perms %s", perms);

	area[3] = 0x1234;
	CHECK(view[3] == 0x1234, "second view no longer shares memory");
	pid_t child = fork();
	if (child == 0) {
		area[5] = 0x5678;
		_exit(0);
	}
	waitpid(child, NULL, 0);
	CHECK(area[5] == 0x5678 && view[5] == 0x5678, "child's write not shared");
	return zdtm_finish();
}
