/*
 * mem_file_shared: MAP_SHARED mapping of a regular file in STATEDIR.
 *
 * STATEDIR/shared.dat (32 pages, pattern A written with write()) is mapped
 * MAP_SHARED; pattern B is written through the mapping to the odd pages and
 * the fd is closed.  The loop only reads (the content lives in the file).
 * After go: the mapping shows A/B, the file read with pread() shows the same,
 * and mapping and file are still coherent in both directions (a store via
 * the mapping is seen by pread, a pwrite is seen via the mapping).
 */
#include "zdtm.h"
#include <sys/mman.h>

#define PG 4096UL
#define NPAGES 32

static uint64_t pat(size_t page, size_t word, int b)
{
	return zdtm_mix((page << 24) ^ (word << 2) ^ (uint64_t)b ^ 0x77);
}

int main(int argc, char **argv)
{
	char path[PATH_MAX], line[PATH_MAX + 256], perms[5];
	uint64_t page[PG / 8], *m, sum = 0, v;
	int fd;

	zdtm_init(argc, argv);
	zdtm_path("shared.dat", path, sizeof(path));
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	for (size_t p = 0; p < NPAGES; p++) {
		for (size_t w = 0; w < PG / 8; w++)
			page[w] = pat(p, w, 0);
		if (write(fd, page, PG) != PG)
			return perror("write"), 1;
	}
	m = mmap(NULL, NPAGES * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED)
		return perror("mmap"), 1;
	close(fd);
	for (size_t p = 1; p < NPAGES; p += 2)
		for (size_t w = 0; w < PG / 8; w++)
			m[p * PG / 8 + w] = pat(p, w, 1);

	zdtm_ready();
	while (!zdtm_go()) {
		for (size_t w = 0; w < NPAGES * PG / 8; w += 61)
			sum += m[w];
		zdtm_sleep_ms(2);
	}
	(void)sum;

	fd = open(path, O_RDWR);
	if (fd < 0)
		return fail("cannot open %s: %m", path), zdtm_finish();
	for (size_t p = 0; p < NPAGES; p++) {
		int ok_m = 1, ok_f = 1;

		if (pread(fd, page, PG, p * PG) != PG)
			ok_f = 0;
		for (size_t w = 0; w < PG / 8; w++) {
			ok_m &= m[p * PG / 8 + w] == pat(p, w, p & 1);
			ok_f &= page[w] == pat(p, w, p & 1);
		}
		CHECK(ok_m, "page %zu wrong in the mapping", p);
		CHECK(ok_f, "page %zu wrong in the file", p);
	}
	if (zdtm_maps_line(m, line, sizeof(line)) == 0) {
		sscanf(line, "%*s %4s", perms);
		CHECK(!strcmp(perms, "rw-s"), "perms %s", perms);
		CHECK(!strcmp(zdtm_maps_name(line), path), "maps name '%s'",
		      zdtm_maps_name(line));
	} else
		fail("mapping gone");

	/* coherence: mapping -> file, file -> mapping */
	m[10] = 0xfeedface;
	CHECK(pread(fd, &v, 8, 80) == 8 && v == 0xfeedface, "store via mapping not in file");
	v = 0xdeadbeef;
	CHECK(pwrite(fd, &v, 8, PG + 16) == 8 && m[PG / 8 + 2] == 0xdeadbeef,
	      "pwrite to file not seen in mapping");
	close(fd);
	return zdtm_finish();
}
