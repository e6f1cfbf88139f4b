/*
 * tree_fork_wait: a forked child waiting on its parent.
 *
 * The parent forks a child that blocks in read() on a pipe from the parent
 * (nothing queued).  After go the parent writes one byte; the child checks
 * that it read it, that getppid() is still the parent, then exits with 42.
 * The parent must reap it with waitpid(child) and see status 42: the
 * restored child is the restored parent's child.
 */
#include "zdtm.h"
#include <sys/wait.h>

int main(int argc, char **argv)
{
	int p[2], st = 0;
	pid_t parent = getpid(), child;

	zdtm_init(argc, argv);
	if (pipe(p))
		return 2;
	child = fork();
	if (child == 0) {
		char c = 0;
		close(p[1]);
		ssize_t n;
		while ((n = read(p[0], &c, 1)) < 0 && errno == EINTR)
			;
		_exit(n == 1 && c == 'x' && getppid() == parent ? 42 : 1);
	}
	close(p[0]);
	zdtm_ready();
	zdtm_wait_go();

	CHECK(write(p[1], "x", 1) == 1, "write to child: %m");
	pid_t got = waitpid(child, &st, 0);
	CHECK(got == child, "waitpid(%d) gave %d: %m", child, got);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 42, "child status %#x, want exit 42", st);
	return zdtm_finish();
}
