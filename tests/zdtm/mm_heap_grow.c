/*
 * mm_heap_grow: the program break (brk) survives and the heap keeps growing.
 *
 * Before the dump the heap is grown with malloc() (small blocks, main arena)
 * and sbrk(); the break, /proc/self/stat start_brk (field 47) and the [heap]
 * maps entry are recorded.  After go: the break and start_brk are unchanged,
 * [heap] still ends at the break, the old blocks are intact, and the heap can
 * grow a lot further: sbrk(+64 MiB) and 200000 more malloc()s, all written
 * and checked, with [heap] covering the new break.
 */
#include "zdtm.h"

#define NOLD 20000
#define NNEW 200000

static unsigned long stat_field(int n)
{
	char buf[4096], *p;
	unsigned long v = 0;

	if (zdtm_read("/proc/self/stat", buf, sizeof(buf)) < 0)
		return 0;
	p = strrchr(buf, ')') + 2; /* field 3 */
	for (int i = 3; i < n; i++)
		p = strchr(p, ' ') + 1;
	sscanf(p, "%lu", &v);
	return v;
}

/* end address of the [heap] mapping, 0 if none */
static unsigned long heap_end(void)
{
	FILE *f = fopen("/proc/self/maps", "re");
	char line[512];
	unsigned long s, e, end = 0;

	while (f && fgets(line, sizeof(line), f))
		if (strstr(line, "[heap]") && sscanf(line, "%lx-%lx", &s, &e) == 2)
			end = e;
	if (f)
		fclose(f);
	return end;
}

int main(int argc, char **argv)
{
	uint64_t **old = malloc(NOLD * sizeof(*old)), **new, *chunk;
	unsigned long brk0, start_brk0, heap0, iter = 0;
	char *grown;

	zdtm_init(argc, argv);
	for (int i = 0; i < NOLD; i++) {
		old[i] = malloc(64 + i % 128);
		old[i][0] = zdtm_mix(i);
		old[i][7] = i;
	}
	grown = sbrk(1 << 20);
	memset(grown, 0x5a, 1 << 20);
	brk0 = (unsigned long)sbrk(0);
	start_brk0 = stat_field(47);
	heap0 = heap_end();
	if (!heap0 || !start_brk0)
		return fprintf(stderr, "no [heap] or start_brk\n"), 1;

	zdtm_ready();
	while (!zdtm_go()) {
		for (int i = 0; i < NOLD; i += 97)
			iter += old[i][0] == zdtm_mix(i);
		zdtm_sleep_ms(2);
	}
	(void)iter;

	CHECK((unsigned long)sbrk(0) == brk0, "break moved: %p != %#lx", sbrk(0), brk0);
	CHECK(stat_field(47) == start_brk0, "start_brk %lu != %lu", stat_field(47), start_brk0);
	CHECK(heap_end() == heap0, "[heap] ends at %#lx, was %#lx", heap_end(), heap0);
	for (int i = 0; i < NOLD; i++)
		if (old[i][0] != zdtm_mix(i) || old[i][7] != (uint64_t)i) {
			fail("old block %d corrupted", i);
			break;
		}
	for (int i = 0; i < 1 << 20; i++)
		if (grown[i] != 0x5a) {
			fail("sbrk area byte %d corrupted", i);
			break;
		}

	/* grow: raw sbrk, then lots of small mallocs */
	chunk = sbrk(64 << 20);
	if (chunk == (void *)-1) {
		fail("sbrk(64 MiB) failed: %m");
	} else {
		CHECK((unsigned long)chunk == brk0, "sbrk returned %p, not the old break", chunk);
		for (size_t i = 0; i < (64 << 20) / 8; i++)
			chunk[i] = zdtm_mix(i);
		for (size_t i = 0; i < (64 << 20) / 8; i++)
			if (chunk[i] != zdtm_mix(i)) {
				fail("sbrk chunk word %zu wrong", i);
				break;
			}
	}
	new = malloc(NNEW * sizeof(*new));
	for (int i = 0; i < NNEW; i++) {
		new[i] = malloc(100);
		if (!new[i]) {
			fail("malloc %d failed", i);
			break;
		}
		memset(new[i], i & 0xff, 100);
		new[i][0] = zdtm_mix(i + NOLD);
	}
	for (int i = 0; i < NNEW && new[i]; i++)
		if (new[i][0] != zdtm_mix(i + NOLD) || ((unsigned char *)new[i])[99] != (i & 0xff)) {
			fail("new block %d corrupted", i);
			break;
		}
	CHECK((unsigned long)sbrk(0) > brk0 + (64 << 20), "heap did not grow past the sbrk chunk");
	CHECK(heap_end() == (unsigned long)sbrk(0), "[heap] ends at %#lx, break is %p",
	      heap_end(), sbrk(0));
	return zdtm_finish();
}
