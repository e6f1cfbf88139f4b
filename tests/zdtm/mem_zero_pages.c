/*
 * mem_zero_pages: pages of zeros among pages that only look like them.
 *
 * A 16 MiB private anonymous area, every page first written with data, then
 * by page index i % 4: 0 rewritten with zeros (present, all zero: stored as
 * "the zero page"); 1 left full of data; 2 zeros but for its very last
 * byte; 3 zeros but for one byte somewhere past its first 16 bytes.  The
 * copy loop (childcopy.c) and the engine's hashing decide which pages are
 * zeros: a page of kinds 2 or 3 taken for one would come back zeroed.
 * After go: every byte of every page as set up.
 */
#include "zdtm.h"
#include <sys/mman.h>

#define AREA_SIZE (16UL << 20)
#define PAGE 4096

static size_t lone_byte(size_t i)
{
	return 16 + (zdtm_mix(i) % (PAGE - 16));
}

static uint8_t want(size_t i, size_t off)
{
	switch (i % 4) {
	case 0:
		return 0;
	case 1:
		return (uint8_t)(zdtm_mix(i * PAGE + off) | 1);
	case 2:
		return off == PAGE - 1 ? 0x5a : 0;
	default:
		return off == lone_byte(i) ? 0xa5 : 0;
	}
}

int main(int argc, char **argv)
{
	size_t npages = AREA_SIZE / PAGE, i, off;
	uint8_t *area;

	zdtm_init(argc, argv);
	area = mmap(NULL, AREA_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (area == MAP_FAILED)
		return perror("mmap"), 1;
	memset(area, 0x77, AREA_SIZE); /* every page present, with data first */
	for (i = 0; i < npages; i++)
		for (off = 0; off < PAGE; off++)
			area[i * PAGE + off] = want(i, off);

	zdtm_ready();
	zdtm_wait_go();

	for (i = 0; i < npages; i++)
		for (off = 0; off < PAGE; off++)
			if (area[i * PAGE + off] != want(i, off)) {
				fail("page %zu (kind %zu) byte %zu: %#x, not %#x", i, i % 4, off,
				     area[i * PAGE + off], want(i, off));
				return zdtm_finish();
			}
	return zdtm_finish();
}
