/*
 * tree_session_lost: a session whose leader has exited.
 *
 * The top becomes a child subreaper and forks L, which calls setsid(),
 * forks C and D, and exits; the top reaps L, adopts C and D.  C forks G
 * (G leads its own group, in session L); D joins no new group.  So C, D
 * and G are in session L, C and D in process group L, both led by a dead
 * PID.  After go: every id is the same, C and D are still the top's
 * children (waitpid works), G still C's; kill(-L) reaches C and D; the top
 * is still a child subreaper.
 */
#include "zdtm.h"
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>

static volatile sig_atomic_t got_usr1;
static void on_usr1(int s) { got_usr1 = 1; }

static int sync_pipe[2];

static void signal_ready(void) { (void)!write(sync_pipe[1], "r", 1); }

int main(int argc, char **argv)
{
	pid_t l, ids[3], c, d, g;
	int lpipe[2], gpipe[2], st;

	zdtm_init(argc, argv);
	signal(SIGUSR1, on_usr1);
	if (pipe(sync_pipe) || pipe(lpipe) || pipe(gpipe) || prctl(PR_SET_CHILD_SUBREAPER, 1))
		return 2;
	l = fork();
	if (l == 0) {
		setsid();
		pid_t me = getpid();
		c = fork();
		if (c == 0) {
			g = fork();
			if (g == 0) {
				setpgid(0, 0);
				signal_ready();
				_exit(zdtm_check_member(getpid(), me, NULL, NULL, 0));
			}
			setpgid(g, g);
			(void)!write(gpipe[1], &g, sizeof(g));
			signal_ready();
			_exit(zdtm_check_member(me, me, &got_usr1, &g, 1));
		}
		d = fork();
		if (d == 0) {
			signal_ready();
			_exit(zdtm_check_member(me, me, &got_usr1, NULL, 0));
		}
		ids[0] = c;
		ids[1] = d;
		(void)!write(lpipe[1], ids, 2 * sizeof(pid_t));
		_exit(0);
	}
	CHECK(waitpid(l, &st, 0) == l && WIFEXITED(st), "L did not exit");
	if (read(lpipe[0], ids, 2 * sizeof(pid_t)) != 2 * sizeof(pid_t) || read(gpipe[0], &g, sizeof(g)) != sizeof(g))
		return 2;
	c = ids[0];
	d = ids[1];
	for (int i = 0; i < 3; i++) {
		char x;
		while (read(sync_pipe[0], &x, 1) < 0 && errno == EINTR)
			;
	}
	zdtm_ready();
	zdtm_wait_go();

	CHECK(getsid(c) == l && getpgid(c) == l, "C: sid %d pgid %d, want %d", getsid(c), getpgid(c), l);
	CHECK(getsid(d) == l && getpgid(d) == l, "D: sid %d pgid %d, want %d", getsid(d), getpgid(d), l);
	CHECK(getsid(g) == l && getpgid(g) == g, "G: sid %d pgid %d", getsid(g), getpgid(g));
	CHECK(kill(l, 0) < 0 && errno == ESRCH, "PID %d (the exited leader) exists", l);
	int sub = 0;
	CHECK(prctl(PR_GET_CHILD_SUBREAPER, &sub) == 0 && sub == 1, "no longer a child subreaper");
	CHECK(kill(-l, SIGUSR1) == 0, "kill(-%d) (the leaderless group): %m", l);
	for (int i = 0; i < 2; i++) {
		st = 0;
		CHECK(waitpid(ids[i], &st, 0) == ids[i], "waitpid(%d): %m", ids[i]);
		CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child %d reported %#x", ids[i], st);
	}
	return zdtm_finish();
}
