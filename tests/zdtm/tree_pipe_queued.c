/*
 * tree_pipe_queued: a pipe between parent and child with bytes queued.
 *
 * The parent writes 10000 bytes (a pattern) into a pipe the child has not
 * read yet, and 3000 more into a second pipe in the other direction that
 * the parent will read (queued by the child).  After go the parent writes
 * 1000 more; the child reads all 11000, checks them and exits with 0; the
 * parent reads the child's 3000 bytes, then EOF (the child closed its end
 * by exiting).  Works whether the tree was restored or ran on after a dump:
 * the bytes must not be consumed by the dump.
 */
#include "zdtm.h"
#include <sys/ioctl.h>
#include <sys/wait.h>

static int read_full(int fd, unsigned char *buf, int n)
{
	int got = 0;
	while (got < n) {
		ssize_t r = read(fd, buf + got, n - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		got += r;
	}
	return got;
}

int main(int argc, char **argv)
{
	int down[2], up[2], st = 0;
	static unsigned char buf[16384];

	zdtm_init(argc, argv);
	if (pipe(down) || pipe(up))
		return 2;
	for (int i = 0; i < 11000; i++)
		buf[i] = zdtm_mix(i) & 0xff;
	pid_t child = fork();
	if (child == 0) {
		static unsigned char in[11000], out[3000];
		close(down[1]);
		close(up[0]);
		for (int i = 0; i < 3000; i++)
			out[i] = zdtm_mix(50000 + i) & 0xff;
		if (write(up[1], out, 3000) != 3000)
			_exit(3);
		zdtm_wait_go();
		int bad = read_full(down[0], in, 11000) != 11000;
		bad |= memcmp(in, buf, 11000) != 0;
		_exit(bad);
	}
	close(down[0]);
	close(up[1]);
	CHECK(write(down[1], buf, 10000) == 10000, "write: %m");
	/* wait until the child's bytes are queued */
	int queued = 0;
	while (queued < 3000) {
		if (ioctl(up[0], FIONREAD, &queued) < 0 && errno != EINTR)
			return 2;
		if (queued < 3000)
			zdtm_sleep_ms(1);
	}
	zdtm_ready();
	zdtm_wait_go();

	CHECK(write(down[1], buf + 10000, 1000) == 1000, "write: %m");
	close(down[1]);
	static unsigned char in[4000];
	int n = read_full(up[0], in, sizeof(in));
	CHECK(n == 3000, "read %d bytes from the child, want 3000 then EOF", n);
	for (int i = 0; i < 3000 && n == 3000; i++)
		if (in[i] != (unsigned char)(zdtm_mix(50000 + i) & 0xff)) {
			fail("byte %d from the child differs", i);
			break;
		}
	CHECK(waitpid(child, &st, 0) == child, "waitpid: %m");
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child reported %#x (bytes lost or changed)", st);
	return zdtm_finish();
}
