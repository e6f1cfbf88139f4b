/*
 * mem_file_deleted: mappings of files that were deleted after mmap().
 *
 * Three files are created, mapped and unlinked (fds closed), so their
 * content exists only through the mappings:
 *   - STATEDIR/deleted.dat, MAP_SHARED, mapped twice (two views);
 *   - /dev/shm/snapshotd-zdtm-PID-deleted (tmpfs), MAP_SHARED;
 *   - STATEDIR/deleted-private.dat, MAP_PRIVATE with half the pages COWed.
 * After go: all content comes back, the maps entries name the original path
 * with " (deleted)", and the two views of the shared file still share pages
 * (restore must not turn them into two separate copies).
 */
#include "zdtm.h"
#include <sys/mman.h>

#define PG 4096UL
#define NPAGES 32
#define NWORDS (NPAGES * PG / 8)

static uint64_t *map_deleted(const char *path, int flags, uint64_t seed, int prefill)
{
	uint64_t *m;
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);

	if (fd < 0 || ftruncate(fd, NPAGES * PG)) {
		perror(path);
		exit(1);
	}
	if (prefill) { /* written with write(): clean page-cache pages */
		for (size_t i = 0; i < NWORDS; i++) {
			uint64_t v = zdtm_mix(i ^ seed);
			if (pwrite(fd, &v, 8, i * 8) != 8)
				exit(1);
		}
	}
	m = mmap(NULL, NPAGES * PG, PROT_READ | PROT_WRITE, flags, fd, 0);
	if (m == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
	close(fd);
	unlink(path);
	return m;
}

static void check_name(const char *what, const void *addr, const char *path)
{
	char line[PATH_MAX + 256], want[PATH_MAX + 16];

	snprintf(want, sizeof(want), "%s (deleted)", path);
	if (zdtm_maps_line(addr, line, sizeof(line)))
		return fail("%s: mapping gone", what);
	CHECK(!strcmp(zdtm_maps_name(line), want), "%s: maps name '%s', want '%s'",
	      what, zdtm_maps_name(line), want);
}

int main(int argc, char **argv)
{
	char p1[PATH_MAX], p2[PATH_MAX], p3[PATH_MAX];
	uint64_t *a, *a2, *b, *c, sum = 0;
	int fd;

	zdtm_init(argc, argv);
	zdtm_path("deleted.dat", p1, sizeof(p1));
	snprintf(p2, sizeof(p2), "/dev/shm/snapshotd-zdtm-%d-deleted", getpid());
	zdtm_path("deleted-private.dat", p3, sizeof(p3));

	/* shared file mapped twice: open, map, map again, then unlink */
	fd = open(p1, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || ftruncate(fd, NPAGES * PG))
		return perror(p1), 1;
	a = mmap(NULL, NPAGES * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	a2 = mmap(NULL, NPAGES * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (a == MAP_FAILED || a2 == MAP_FAILED)
		return perror("mmap"), 1;
	close(fd);
	unlink(p1);
	b = map_deleted(p2, MAP_SHARED, 2, 0);
	c = map_deleted(p3, MAP_PRIVATE, 3, 1);
	for (size_t i = 0; i < NWORDS; i++) {
		a[i] = zdtm_mix(i ^ 1);
		b[i] = zdtm_mix(i ^ 2);
	}
	for (size_t p = 0; p < NPAGES; p += 2) /* COW the even pages */
		for (size_t w = 0; w < PG / 8; w++)
			c[p * PG / 8 + w] = ~zdtm_mix((p * PG / 8 + w) ^ 3);

	zdtm_ready();
	while (!zdtm_go()) {
		for (size_t w = 0; w < NWORDS; w += 61)
			sum += a[w] + b[w] + c[w];
		zdtm_sleep_ms(2);
	}
	(void)sum;

	for (size_t i = 0; i < NWORDS; i++) {
		int cowed = (i / (PG / 8)) % 2 == 0;
		uint64_t want_c = cowed ? ~zdtm_mix(i ^ 3) : zdtm_mix(i ^ 3);

		if (a[i] != zdtm_mix(i ^ 1) || a2[i] != a[i]) {
			fail("deleted shared file: word %zu wrong", i);
			break;
		}
		if (b[i] != zdtm_mix(i ^ 2)) {
			fail("deleted tmpfs file: word %zu wrong", i);
			break;
		}
		if (c[i] != want_c) {
			fail("deleted private file: word %zu (%s page) wrong", i,
			     cowed ? "changed" : "clean");
			break;
		}
	}
	check_name("shared", a, p1);
	check_name("shared view 2", a2, p1);
	check_name("tmpfs", b, p2);
	check_name("private", c, p3);
	a[100] = 0xabcdef;
	CHECK(a2[100] == 0xabcdef, "the two views of the deleted file no longer share pages");
	return zdtm_finish();
}
