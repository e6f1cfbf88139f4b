/*
 * fd_flags: file status flags and the close-on-exec flag.
 *
 * Opens one file in several ways:
 *   a: O_RDONLY                      b: O_WRONLY|O_APPEND, FD_CLOEXEC
 *   c: O_RDWR|O_NONBLOCK             d: O_WRONLY, then F_SETFL O_APPEND|O_NONBLOCK
 *   e: O_RDWR|O_CLOEXEC, then F_SETFL O_APPEND, then F_SETFD 0
 * and records F_GETFL and F_GETFD of each.  After go both are unchanged for
 * every fd, and they behave: a write to "a" fails with EBADF, a read from
 * "b" fails with EBADF, and a write through "b" after lseek(0) lands at the
 * end of the file (O_APPEND).
 */
#include "zdtm.h"

#define N 5

int main(int argc, char **argv)
{
	char path[PATH_MAX], c;
	int fd[N], fl0[N], fd0[N];
	struct stat st;

	zdtm_init(argc, argv);
	zdtm_path("flags.dat", path, sizeof(path));
	int w = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (w < 0 || write(w, "0123456789", 10) != 10)
		return perror(path), 1;
	close(w);
	fd[0] = open(path, O_RDONLY);
	fd[1] = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
	fd[2] = open(path, O_RDWR | O_NONBLOCK);
	fd[3] = open(path, O_WRONLY);
	fcntl(fd[3], F_SETFL, O_APPEND | O_NONBLOCK);
	fd[4] = open(path, O_RDWR | O_CLOEXEC);
	fcntl(fd[4], F_SETFL, O_APPEND);
	fcntl(fd[4], F_SETFD, 0);
	for (int i = 0; i < N; i++) {
		if (fd[i] < 0)
			return perror("open"), 1;
		fl0[i] = fcntl(fd[i], F_GETFL);
		fd0[i] = fcntl(fd[i], F_GETFD);
	}
	if (!(fl0[1] & O_APPEND) || !(fl0[2] & O_NONBLOCK) || !(fl0[3] & O_APPEND) ||
	    !(fd0[1] & FD_CLOEXEC) || (fd0[4] & FD_CLOEXEC))
		return fprintf(stderr, "flags not set as intended\n"), 1;

	zdtm_ready();
	zdtm_wait_go();

	for (int i = 0; i < N; i++) {
		int fl = fcntl(fd[i], F_GETFL), fdf = fcntl(fd[i], F_GETFD);
		CHECK(fl == fl0[i], "fd %c: F_GETFL %#o, was %#o", 'a' + i, fl, fl0[i]);
		CHECK(fdf == fd0[i], "fd %c: F_GETFD %#x, was %#x", 'a' + i, fdf, fd0[i]);
	}
	CHECK(write(fd[0], "x", 1) == -1 && errno == EBADF, "write to O_RDONLY fd worked");
	CHECK(read(fd[1], &c, 1) == -1 && errno == EBADF, "read from O_WRONLY fd worked");
	lseek(fd[1], 0, SEEK_SET);
	CHECK(write(fd[1], "A", 1) == 1 && fstat(fd[1], &st) == 0 && st.st_size == 11 &&
	      pread(fd[0], &c, 1, 10) == 1 && c == 'A', "O_APPEND write did not go to the end");
	return zdtm_finish();
}
