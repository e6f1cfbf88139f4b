/*
 * fd_unlinked: files unlinked while open.
 *
 * STATEDIR/unlinked-1 gets 64 KiB of known data through fd U and is then
 * unlinked (U's offset stays at 1000).  STATEDIR/unlinked-2 is opened twice
 * (fds V and W, independent descriptions), written, and unlinked.  After go:
 * U still reads the data, its offset is 1000 and st_nlink is 0, and
 * /proc/self/fd/U ends in " (deleted)"; V and W are the same inode (a write
 * through V is read through W) but different descriptions (offsets differ).
 */
#include "zdtm.h"

#define SIZE 65536

int main(int argc, char **argv)
{
	char p1[PATH_MAX], p2[PATH_MAX], link[PATH_MAX], want[PATH_MAX + 16], fdp[64];
	unsigned char *data = malloc(SIZE), *buf = malloc(SIZE);
	struct stat s1, s2;
	int u, v, x;
	ssize_t n;

	zdtm_init(argc, argv);
	zdtm_path("unlinked-1", p1, sizeof(p1));
	zdtm_path("unlinked-2", p2, sizeof(p2));
	for (int i = 0; i < SIZE; i++)
		data[i] = (unsigned char)zdtm_mix(i);
	u = open(p1, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (u < 0 || write(u, data, SIZE) != SIZE)
		return perror(p1), 1;
	lseek(u, 1000, SEEK_SET);
	unlink(p1);
	v = open(p2, O_RDWR | O_CREAT | O_TRUNC, 0644);
	x = open(p2, O_RDWR);
	if (v < 0 || x < 0 || write(v, "second file", 11) != 11)
		return perror(p2), 1;
	unlink(p2);

	zdtm_ready();
	zdtm_wait_go();

	CHECK(lseek(u, 0, SEEK_CUR) == 1000, "offset %ld", (long)lseek(u, 0, SEEK_CUR));
	CHECK(pread(u, buf, SIZE, 0) == SIZE && !memcmp(buf, data, SIZE), "content lost");
	CHECK(fstat(u, &s1) == 0 && s1.st_nlink == 0 && s1.st_size == SIZE,
	      "nlink %lu size %ld", s1.st_nlink, s1.st_size);
	snprintf(fdp, sizeof(fdp), "/proc/self/fd/%d", u);
	n = readlink(fdp, link, sizeof(link) - 1);
	link[n > 0 ? n : 0] = 0;
	snprintf(want, sizeof(want), "%s (deleted)", p1);
	CHECK(!strcmp(link, want), "fd link '%s', expected '%s'", link, want);
	CHECK(write(u, "more", 4) == 4 && pread(u, buf, 4, 1000) == 4 && !memcmp(buf, "more", 4),
	      "cannot write to the unlinked file");

	CHECK(fstat(v, &s1) == 0 && fstat(x, &s2) == 0 && s1.st_ino == s2.st_ino &&
	      s1.st_dev == s2.st_dev, "the two fds of unlinked-2 are different files now");
	CHECK(lseek(v, 0, SEEK_CUR) == 11 && lseek(x, 0, SEEK_CUR) == 0,
	      "offsets of the two fds: %ld/%ld", (long)lseek(v, 0, SEEK_CUR),
	      (long)lseek(x, 0, SEEK_CUR));
	CHECK(pwrite(v, "SHARED", 6, 0) == 6 && pread(x, buf, 6, 0) == 6 &&
	      !memcmp(buf, "SHARED", 6), "write through one fd not seen through the other");
	return zdtm_finish();
}
