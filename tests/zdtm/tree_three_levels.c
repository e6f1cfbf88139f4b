/*
 * tree_three_levels: parent, child, grandchild.
 *
 * Each level forks the next one; every process polls for go, checks that
 * getppid() is still its parent, and exits with a status that encodes its
 * level and the status of its own child (grandchild 7, child 7 + 10 = 17).
 * The top reaps the child with waitpid() and checks the status.
 */
#include "zdtm.h"
#include <sys/wait.h>

/* Run one level below `parent`; returns the exit status to report. */
static int level(int depth, pid_t parent)
{
	int st = 0, mine = 0;

	if (depth < 2) {
		pid_t me = getpid();
		pid_t c = fork();
		if (c == 0)
			_exit(level(depth + 1, me));
		if (c < 0)
			return 100;
		if (depth == 0)
			return c; /* the top returns its child's PID */
		while (waitpid(c, &st, 0) < 0 && errno == EINTR)
			;
		mine = WIFEXITED(st) ? WEXITSTATUS(st) + 10 : 99;
	} else {
		zdtm_wait_go();
		mine = 7;
	}
	if (depth > 0 && getppid() != parent)
		return 98;
	if (depth == 1)
		zdtm_wait_go();
	return mine;
}

int main(int argc, char **argv)
{
	int st = 0;

	zdtm_init(argc, argv);
	pid_t child = level(0, 0);
	/* wait until the grandchild exists: the harness counts 3 processes */
	zdtm_ready();
	zdtm_wait_go();
	pid_t got = waitpid(child, &st, 0);
	CHECK(got == child, "waitpid(%d) gave %d: %m", child, got);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 17, "child status %#x, want exit 17", st);
	return zdtm_finish();
}
