/*
 * mem_file_shm: MAP_SHARED mapping of a file on tmpfs (/dev/shm).
 *
 * /dev/shm/snapshotd-zdtm-PID-shm (32 pages) is created, ftruncate()d,
 * mapped MAP_SHARED and filled with a pattern through the mapping only (the
 * content exists nowhere but in tmpfs page cache); the fd is closed.  After
 * go: the mapping and the file (read()) both hold the pattern, the maps
 * entry still names the file ("rw-s"), and mapping and file are coherent.
 * The file is removed at the end (the harness also removes leftovers).
 */
#include "zdtm.h"
#include <sys/mman.h>

#define PG 4096UL
#define NPAGES 32
#define NWORDS (NPAGES * PG / 8)

int main(int argc, char **argv)
{
	char path[PATH_MAX], line[PATH_MAX + 256], perms[5];
	uint64_t *m, *copy, sum = 0, v;
	int fd;

	zdtm_init(argc, argv);
	snprintf(path, sizeof(path), "/dev/shm/snapshotd-zdtm-%d-shm", getpid());
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || ftruncate(fd, NPAGES * PG))
		return perror(path), 1;
	m = mmap(NULL, NPAGES * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED)
		return perror("mmap"), 1;
	close(fd);
	for (size_t i = 0; i < NWORDS; i++)
		m[i] = zdtm_mix(i * 3);

	zdtm_ready();
	while (!zdtm_go()) {
		for (size_t w = 0; w < NWORDS; w += 61)
			sum += m[w];
		zdtm_sleep_ms(2);
	}
	(void)sum;

	for (size_t i = 0; i < NWORDS; i++)
		if (m[i] != zdtm_mix(i * 3)) {
			fail("mapping word %zu wrong", i);
			break;
		}
	fd = open(path, O_RDWR);
	if (fd < 0) {
		fail("cannot open %s after restore: %m", path);
	} else {
		copy = malloc(NPAGES * PG);
		CHECK(pread(fd, copy, NPAGES * PG, 0) == NPAGES * PG &&
		      !memcmp(copy, m, NPAGES * PG), "file content differs from mapping");
		m[1] = 0x1111;
		CHECK(pread(fd, &v, 8, 8) == 8 && v == 0x1111, "mapping store not in file");
		v = 0x2222;
		CHECK(pwrite(fd, &v, 8, 16) == 8 && m[2] == 0x2222, "file write not in mapping");
		close(fd);
	}
	if (zdtm_maps_line(m, line, sizeof(line)) == 0) {
		sscanf(line, "%*s %4s", perms);
		CHECK(!strcmp(perms, "rw-s"), "perms %s", perms);
		CHECK(!strcmp(zdtm_maps_name(line), path), "maps name '%s'",
		      zdtm_maps_name(line));
	} else
		fail("mapping gone");
	unlink(path);
	return zdtm_finish();
}
