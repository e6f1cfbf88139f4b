/*
 * ipc_shm: POSIX and SysV shared memory.
 *
 * POSIX: /dev/shm/snapshotd-zdtm-PID-posix (shm_open), 64 KiB written with
 * a pattern through the fd, mapped MAP_SHARED, the fd kept at offset 1234.
 * SysV: a segment with key 0x5d<pid> (3 pages + 100 bytes), filled with a
 * pattern, attached twice (read-write and read-only); an IPC_PRIVATE segment
 * attached and then marked removed (IPC_RMID).  The ids go to STATEDIR/shmids
 * (the test removes the keyed segment and the /dev/shm file between kill and
 * restore, as a reboot would, and cleans up after).
 * After go: shmget(key) gives the same id and size; every mapping is at the
 * same address and holds its pattern; a write through the read-write SysV
 * mapping shows in the read-only one; the removed segment is still attached
 * and marked removed; the POSIX fd reads the pattern from offset 1234.
 */
#include "zdtm.h"
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>

#define PSIZE 65536
#define SSIZE (3 * 4096 + 100)

static int pattern_ok(const unsigned char *p, size_t n, int seed)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != (unsigned char)zdtm_mix(seed * 7919ULL + i))
			return 0;
	return 1;
}

static void pattern(unsigned char *p, size_t n, int seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (unsigned char)zdtm_mix(seed * 7919ULL + i);
}

int main(int argc, char **argv)
{
	char name[64], ids[64];
	unsigned char *pm, *s1, *s1ro, *s2, buf[64];
	static unsigned char pbuf[PSIZE];
	struct shmid_ds ds;
	key_t key;
	int pfd, id1, id2;

	zdtm_init(argc, argv);
	snprintf(name, sizeof(name), "/snapshotd-zdtm-%d-posix", getpid());
	pfd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
	pattern(pbuf, PSIZE, 1);
	if (pfd < 0 || write(pfd, pbuf, PSIZE) != PSIZE)
		return perror("shm_open"), 1;
	pm = mmap(NULL, PSIZE, PROT_READ | PROT_WRITE, MAP_SHARED, pfd, 0);
	lseek(pfd, 1234, SEEK_SET);
	key = 0x5d000000 | (getpid() & 0xffffff);
	id1 = shmget(key, SSIZE, IPC_CREAT | IPC_EXCL | 0640);
	id2 = shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0600);
	if (pm == MAP_FAILED || id1 < 0 || id2 < 0)
		return perror("shmget"), 1;
	snprintf(ids, sizeof(ids), "%d %d\n", id1, id2);
	zdtm_write_file("shmids", ids);
	s1 = shmat(id1, NULL, 0);
	s1ro = shmat(id1, NULL, SHM_RDONLY);
	s2 = shmat(id2, NULL, 0);
	if (s1 == (void *)-1 || s1ro == (void *)-1 || s2 == (void *)-1 || shmctl(id2, IPC_RMID, NULL))
		return perror("shmat"), 1;
	pattern(s1, SSIZE, 2);
	pattern(s2, 4096, 3);

	zdtm_ready();
	zdtm_wait_go();

	CHECK(shmget(key, 0, 0) == id1, "key %#x now gives id %d, want %d", key, shmget(key, 0, 0), id1);
	CHECK(shmctl(id1, IPC_STAT, &ds) == 0 && ds.shm_segsz == SSIZE && (ds.shm_perm.mode & 0777) == 0640,
	      "keyed segment: size %zu mode %o", ds.shm_segsz, ds.shm_perm.mode);
	CHECK(pattern_ok(s1, SSIZE, 2), "keyed segment content");
	CHECK(pattern_ok(s1ro, SSIZE, 2), "keyed segment content (read-only view)");
	s1[5] ^= 0xff;
	CHECK(s1ro[5] == s1[5], "the two views of the keyed segment are not shared");
	s1[5] ^= 0xff;
	CHECK(pattern_ok(s2, 4096, 3), "removed segment content");
	CHECK(shmctl(id2, IPC_STAT, &ds) == 0 && (ds.shm_perm.mode & SHM_DEST) && ds.shm_nattch == 1,
	      "removed segment: mode %o nattch %lu", ds.shm_perm.mode, (unsigned long)ds.shm_nattch);
	CHECK(pattern_ok(pm, PSIZE, 1), "POSIX shm mapping content");
	CHECK(lseek(pfd, 0, SEEK_CUR) == 1234, "POSIX shm fd offset %ld", (long)lseek(pfd, 0, SEEK_CUR));
	CHECK(read(pfd, buf, 64) == 64 && !memcmp(buf, pbuf + 1234, 64), "POSIX shm fd content");
	pm[0] ^= 1;
	CHECK(pread(pfd, buf, 1, 0) == 1 && buf[0] == pm[0], "POSIX mapping and fd not coherent");
	shmdt(s1);
	shmdt(s1ro);
	shmctl(id1, IPC_RMID, NULL);
	shm_unlink(name);
	return zdtm_finish();
}
