/*
 * fd_shared_offset: dup()ed fds share one open file description.
 *
 * fd A is opened on a file, B = dup(A), and C is a second, independent
 * open() of the same file.  30 bytes are written through A (so B's offset
 * is 30 as well) and C is moved to offset 5.  After go: A and B are at 30,
 * C at 5; kcmp(KCMP_FILE) says A and B are the same file description and
 * A and C are not; a write of 10 bytes through B moves A to 40 and leaves C
 * at 5, and an F_SETFL O_APPEND on A shows up on B.
 */
#include "zdtm.h"
#include <linux/kcmp.h>

static int kcmp_file(int a, int b)
{
	return syscall(SYS_kcmp, getpid(), getpid(), KCMP_FILE, a, b);
}

int main(int argc, char **argv)
{
	char path[PATH_MAX];
	int a, b, c;

	zdtm_init(argc, argv);
	zdtm_path("shared-offset.dat", path, sizeof(path));
	a = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	b = dup(a);
	c = open(path, O_RDWR);
	if (a < 0 || b < 0 || c < 0 || write(a, "abcdefghijklmnopqrstuvwxyz0123", 30) != 30)
		return perror(path), 1;
	lseek(c, 5, SEEK_SET);

	zdtm_ready();
	zdtm_wait_go();

	CHECK(lseek(a, 0, SEEK_CUR) == 30 && lseek(b, 0, SEEK_CUR) == 30,
	      "offsets of A/B: %ld/%ld, expected 30", (long)lseek(a, 0, SEEK_CUR),
	      (long)lseek(b, 0, SEEK_CUR));
	CHECK(lseek(c, 0, SEEK_CUR) == 5, "offset of C: %ld", (long)lseek(c, 0, SEEK_CUR));
	if (kcmp_file(a, a) == 0) { /* kcmp available */
		CHECK(kcmp_file(a, b) == 0, "A and B are no longer one file description");
		CHECK(kcmp_file(a, c) != 0, "A and C became one file description");
	}
	CHECK(write(b, "0123456789", 10) == 10, "write through B failed");
	CHECK(lseek(a, 0, SEEK_CUR) == 40, "write through B moved A to %ld, not 40",
	      (long)lseek(a, 0, SEEK_CUR));
	CHECK(lseek(c, 0, SEEK_CUR) == 5, "write through B moved C");
	fcntl(a, F_SETFL, O_APPEND);
	CHECK(fcntl(b, F_GETFL) & O_APPEND, "status flags not shared between A and B");
	CHECK(!(fcntl(c, F_GETFL) & O_APPEND), "status flags shared between A and C");
	return zdtm_finish();
}
