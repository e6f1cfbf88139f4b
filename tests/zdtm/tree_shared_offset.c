/*
 * tree_shared_offset: an open file description shared across fork.
 *
 * The parent opens a file, writes 100 bytes, forks; the child appends 50
 * bytes through the same description (same offset).  After go the child
 * writes 10 more bytes and exits; the parent's offset must then be 160 (the
 * child moved it), the file 160 bytes long with the three parts in order,
 * and O_APPEND-less writes from both must not overlap.
 */
#include "zdtm.h"
#include <sys/wait.h>

int main(int argc, char **argv)
{
	char path[PATH_MAX], buf[256], want[160];
	int st = 0, fd;

	zdtm_init(argc, argv);
	zdtm_path("shared.dat", path, sizeof(path));
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		return 2;
	memset(want, 'P', 100);
	memset(want + 100, 'C', 50);
	memset(want + 150, 'c', 10);
	if (write(fd, want, 100) != 100)
		return 2;
	int go[2];
	if (pipe(go))
		return 2;
	pid_t child = fork();
	if (child == 0) {
		char c;
		int bad = write(fd, want + 100, 50) != 50;
		close(go[1]);
		while (read(go[0], &c, 1) < 0 && errno == EINTR)
			;
		bad |= (write(fd, want + 150, 10) != 10) << 1;
		_exit(bad);
	}
	close(go[0]);
	while (lseek(fd, 0, SEEK_CUR) != 150)
		zdtm_sleep_ms(1);
	zdtm_ready();
	zdtm_wait_go();

	CHECK(lseek(fd, 0, SEEK_CUR) == 150, "offset %ld before the child's last write, want 150",
	      (long)lseek(fd, 0, SEEK_CUR));
	CHECK(write(go[1], "g", 1) == 1, "write: %m");
	CHECK(waitpid(child, &st, 0) == child, "waitpid: %m");
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child reported %#x", st);
	CHECK(lseek(fd, 0, SEEK_CUR) == 160, "offset %ld after the child's write, want 160: not shared",
	      (long)lseek(fd, 0, SEEK_CUR));
	CHECK(pread(fd, buf, sizeof(buf), 0) == 160 && !memcmp(buf, want, 160), "file content differs");
	return zdtm_finish();
}
