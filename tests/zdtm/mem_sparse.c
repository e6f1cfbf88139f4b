/*
 * mem_sparse: a sparse 1 GiB MAP_NORESERVE area.
 *
 * One page of every 64 of a 1 GiB private anonymous MAP_NORESERVE area is
 * written (16 MiB in total; MADV_NOHUGEPAGE keeps it sparse under THP).
 * After go: the area's Rss (from /proc/self/smaps) has not grown by more
 * than a few MiB (zero pages must not be materialised by dump/restore), every
 * touched page holds its pattern and every other page reads as zeros.
 */
#include "zdtm.h"
#include <sys/mman.h>

#define AREA (1UL << 30)
#define PG 4096UL
#define STRIDE 64

/* Rss in kB of the vma starting at addr */
static long rss_kb(void *addr)
{
	FILE *f = fopen("/proc/self/smaps", "re");
	char line[512];
	int in = 0;
	long kb = -1;

	while (f && fgets(line, sizeof(line), f)) {
		unsigned long s, e;

		if (sscanf(line, "%lx-%lx ", &s, &e) == 2) /* a vma header line */
			in = s == (unsigned long)addr;
		else if (in && sscanf(line, "Rss: %ld kB", &kb) == 1)
			break;
	}
	if (f)
		fclose(f);
	return kb;
}

int main(int argc, char **argv)
{
	uint64_t *a, sum = 0;
	size_t npages = AREA / PG, wpp = PG / 8;
	long rss0, rss1;

	zdtm_init(argc, argv);
	a = mmap(NULL, AREA, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (a == MAP_FAILED)
		return perror("mmap"), 1;
	madvise(a, AREA, MADV_NOHUGEPAGE);
	for (size_t p = 0; p < npages; p += STRIDE) {
		a[p * wpp] = zdtm_mix(p);
		a[p * wpp + 100] = ~zdtm_mix(p);
		a[p * wpp + wpp - 1] = p;
	}
	rss0 = rss_kb(a);

	zdtm_ready();
	while (!zdtm_go()) {
		for (size_t p = 0; p < npages; p += STRIDE * 16)
			sum += a[p * wpp];
		zdtm_sleep_ms(2);
	}
	(void)sum;

	rss1 = rss_kb(a);
	CHECK(rss0 > 0 && rss1 > 0, "no Rss for the area in smaps");
	CHECK(rss1 <= rss0 + 4096, "Rss grew from %ld kB to %ld kB", rss0, rss1);
	for (size_t p = 0; p < npages; p++) {
		uint64_t *pg = a + p * wpp;

		if (p % STRIDE == 0) {
			if (pg[0] != zdtm_mix(p) || pg[100] != ~zdtm_mix(p) ||
			    pg[wpp - 1] != p) {
				fail("touched page %zu lost its data", p);
				break;
			}
			for (size_t w = 1; w < wpp - 1; w++)
				if (w != 100 && pg[w]) {
					fail("touched page %zu word %zu not zero", p, w);
					p = npages;
					break;
				}
		} else {
			uint64_t any = 0;

			for (size_t w = 0; w < wpp; w++)
				any |= pg[w];
			if (any) {
				fail("untouched page %zu is not zero", p);
				break;
			}
		}
	}
	return zdtm_finish();
}
