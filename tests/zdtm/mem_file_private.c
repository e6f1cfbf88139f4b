/*
 * mem_file_private: MAP_PRIVATE mapping of a regular file, partly COWed.
 *
 * STATEDIR/private.dat (64 pages, pattern A) is mapped MAP_PRIVATE twice:
 * whole file, and 16 pages from file offset 16 pages.  Every third page of
 * the first mapping and page 1 of the second are overwritten with pattern B
 * (copy-on-write), the rest stay clean; the fd is closed.  After go: changed
 * pages read B, clean pages read A, the maps entries still name the file
 * with the same offset and "rw-p", and the file on disk is untouched
 * (all pattern A, same size and mtime): restore must not write it back.
 */
#include "zdtm.h"
#include <sys/mman.h>

#define PG 4096UL
#define NPAGES 64
#define OFF2 16
#define LEN2 16

static uint64_t pat(size_t page, size_t word, int b)
{
	return zdtm_mix((page << 20) ^ (word << 1) ^ (uint64_t)b);
}

static int page_ok(const uint64_t *p, size_t fpage, int b)
{
	for (size_t w = 0; w < PG / 8; w++)
		if (p[w] != pat(fpage, w, b))
			return 0;
	return 1;
}

static void check_map(const char *what, const void *addr, const char *path,
		      unsigned long off)
{
	char line[PATH_MAX + 256], perms[5];
	unsigned long o;

	if (zdtm_maps_line(addr, line, sizeof(line)))
		return fail("%s: not mapped", what);
	sscanf(line, "%*s %4s %lx", perms, &o);
	CHECK(!strcmp(perms, "rw-p"), "%s: perms %s", what, perms);
	CHECK(!strcmp(zdtm_maps_name(line), path), "%s: maps name '%s'", what,
	      zdtm_maps_name(line));
	/* the offset column is for the start of the vma, which may be split */
	unsigned long start;
	sscanf(line, "%lx", &start);
	CHECK(o + ((unsigned long)addr - start) == off, "%s: offset %#lx", what, o);
}

int main(int argc, char **argv)
{
	char path[PATH_MAX];
	uint64_t page[PG / 8], *m1, *m2, sum = 0;
	struct stat st0, st1;
	int fd;

	zdtm_init(argc, argv);
	zdtm_path("private.dat", path, sizeof(path));
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	for (size_t p = 0; p < NPAGES; p++) {
		for (size_t w = 0; w < PG / 8; w++)
			page[w] = pat(p, w, 0);
		if (write(fd, page, PG) != PG)
			return perror("write"), 1;
	}
	fsync(fd);
	m1 = mmap(NULL, NPAGES * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	m2 = mmap(NULL, LEN2 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, OFF2 * PG);
	if (m1 == MAP_FAILED || m2 == MAP_FAILED)
		return perror("mmap"), 1;
	close(fd);
	for (size_t p = 0; p < NPAGES; p += 3)
		for (size_t w = 0; w < PG / 8; w++)
			m1[p * PG / 8 + w] = pat(p, w, 1);
	for (size_t w = 0; w < PG / 8; w++)
		m2[PG / 8 + w] = pat(OFF2 + 1, w, 1);
	stat(path, &st0);

	zdtm_ready();
	while (!zdtm_go()) {
		/* work: read through both mappings */
		for (size_t w = 0; w < NPAGES * PG / 8; w += 97)
			sum += m1[w];
		for (size_t w = 0; w < LEN2 * PG / 8; w += 89)
			sum += m2[w];
		zdtm_sleep_ms(2);
	}
	(void)sum;

	for (size_t p = 0; p < NPAGES; p++)
		CHECK(page_ok(m1 + p * PG / 8, p, p % 3 == 0),
		      "mapping 1 page %zu: wrong content (%s page)", p,
		      p % 3 == 0 ? "changed" : "clean");
	for (size_t p = 0; p < LEN2; p++)
		CHECK(page_ok(m2 + p * PG / 8, OFF2 + p, p == 1),
		      "mapping 2 page %zu: wrong content", p);
	check_map("mapping 1", m1, path, 0);
	check_map("mapping 1 (clean page)", (char *)m1 + PG, path, PG);
	check_map("mapping 2", m2, path, OFF2 * PG);

	/* the file itself must be untouched */
	fd = open(path, O_RDONLY);
	for (size_t p = 0; p < NPAGES; p++) {
		if (pread(fd, page, PG, p * PG) != PG || !page_ok(page, p, 0)) {
			fail("file page %zu on disk was modified", p);
			break;
		}
	}
	fstat(fd, &st1);
	close(fd);
	CHECK(st1.st_size == st0.st_size, "file size %ld != %ld", st1.st_size, st0.st_size);
	CHECK(st1.st_mtim.tv_sec == st0.st_mtim.tv_sec &&
	      st1.st_mtim.tv_nsec == st0.st_mtim.tv_nsec, "file mtime changed");
	CHECK(st1.st_ino == st0.st_ino, "file was replaced (inode changed)");
	return zdtm_finish();
}
