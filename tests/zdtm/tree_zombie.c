/*
 * tree_zombie: zombies the parent reaps after restore.
 *
 * The parent forks two children and does not reap them: one exits with 7,
 * the other is killed by SIGTERM.  Both are zombies when the tree is dumped.
 * After go the parent checks that both are still zombies (/proc state Z) and
 * waitpid() gives exit status 7 and termination by SIGTERM; a third
 * waitpid(-1) must report no more children (ECHILD).
 */
#include "zdtm.h"
#include <signal.h>
#include <sys/wait.h>

static char state_of(pid_t pid)
{
	char path[64], buf[512], *p;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	if (zdtm_read(path, buf, sizeof(buf)) < 0 || !(p = strrchr(buf, ')')))
		return '?';
	return p[2];
}

int main(int argc, char **argv)
{
	int st = 0;
	pid_t a, b;

	zdtm_init(argc, argv);
	a = fork();
	if (a == 0)
		_exit(7);
	b = fork();
	if (b == 0) {
		for (;;)
			pause();
	}
	kill(b, SIGTERM);
	while (state_of(a) != 'Z' || state_of(b) != 'Z')
		zdtm_sleep_ms(1);
	zdtm_ready();
	zdtm_wait_go();

	CHECK(state_of(a) == 'Z', "child %d state %c, want Z", a, state_of(a));
	CHECK(state_of(b) == 'Z', "child %d state %c, want Z", b, state_of(b));
	CHECK(waitpid(a, &st, 0) == a, "waitpid(%d): %m", a);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 7, "child %d status %#x, want exit 7", a, st);
	CHECK(waitpid(b, &st, 0) == b, "waitpid(%d): %m", b);
	CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM, "child %d status %#x, want SIGTERM", b, st);
	CHECK(waitpid(-1, &st, WNOHANG) < 0 && errno == ECHILD, "an unexpected child is left");
	return zdtm_finish();
}
