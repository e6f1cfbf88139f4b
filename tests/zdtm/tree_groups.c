/*
 * tree_groups: process groups and a session led by a child.
 *
 * The top (a session leader, started by the harness) forks:
 *   A: setsid() -- a session led by a child; A forks B and C in its
 *      session; B leads a group (setpgid(0, 0)), C joins B's group;
 *   D: leads a group in the top's session; E (D's child) joins D's group;
 *   L: leads a group, H (another child of the top) joins it, then L is
 *      killed and reaped: the group lives on without its leader.
 * Every child records its expected (pgid, sid) and checks them after go,
 * reporting through its exit status; parents reap their children and
 * combine.  The top also checks getpgid()/getsid() of each child from
 * outside and that kill(-pgid, SIGUSR1) reaches the group's members.
 */
#include "zdtm.h"
#include <signal.h>
#include <sys/wait.h>

static volatile sig_atomic_t got_usr1;
static void on_usr1(int s) { got_usr1 = 1; }

static int sync_pipe[2], bpipe[2];

static void signal_ready(void) { (void)!write(sync_pipe[1], "r", 1); }

int main(int argc, char **argv)
{
	pid_t top = getpid(), a, d, h, l, kids[8];
	int n = 0, st;

	zdtm_init(argc, argv);
	signal(SIGUSR1, on_usr1);
	if (pipe(sync_pipe) || pipe(bpipe))
		return 2;

	a = fork();
	if (a == 0) {
		setsid();
		pid_t me = getpid(), b, c;
		b = fork();
		if (b == 0) {
			setpgid(0, 0);
			signal_ready();
			_exit(zdtm_check_member(getpid(), me, &got_usr1, NULL, 0));
		}
		setpgid(b, b); /* both sides, as shells do */
		c = fork();
		if (c == 0) {
			setpgid(0, b);
			signal_ready();
			_exit(zdtm_check_member(b, me, &got_usr1, NULL, 0));
		}
		pid_t k[2] = {b, c};
		(void)!write(bpipe[1], &b, sizeof(b));
		signal_ready();
		_exit(zdtm_check_member(me, me, NULL, k, 2));
	}
	kids[n++] = a;

	d = fork();
	if (d == 0) {
		setpgid(0, 0);
		pid_t me = getpid(), e = fork();
		if (e == 0) {
			setpgid(0, me);
			signal_ready();
			_exit(zdtm_check_member(me, top, &got_usr1, NULL, 0));
		}
		signal_ready();
		_exit(zdtm_check_member(me, top, &got_usr1, &e, 1));
	}
	kids[n++] = d;

	/* a group whose leader has exited: L leads it, H joins, L is reaped */
	l = fork();
	if (l == 0) {
		setpgid(0, 0);
		pause();
		_exit(0);
	}
	setpgid(l, l);
	h = fork();
	if (h == 0) {
		setpgid(0, l);
		signal_ready();
		_exit(zdtm_check_member(l, top, &got_usr1, NULL, 0));
	}
	setpgid(h, l);
	kids[n++] = h;

	/* A, B, C, D, E, H */
	for (int i = 0; i < 6; i++) {
		char c;
		while (read(sync_pipe[0], &c, 1) < 0 && errno == EINTR)
			;
	}
	kill(l, SIGKILL);
	waitpid(l, &st, 0);
	zdtm_ready();
	zdtm_wait_go();

	CHECK(getsid(a) == a && getpgid(a) == a, "A: sid %d pgid %d", getsid(a), getpgid(a));
	CHECK(getpgid(d) == d && getsid(d) == top, "D: pgid %d sid %d", getpgid(d), getsid(d));
	CHECK(getpgid(h) == l, "H: pgid %d, want the leaderless group %d", getpgid(h), l);
	CHECK(getpgrp() == top && getsid(0) == top, "top: pgid %d sid %d", getpgrp(), getsid(0));
	/* the two groups of our session get a signal; B's group is in A's
	 * session: signal it from here too (same uid, allowed) */
	CHECK(kill(-d, SIGUSR1) == 0, "kill(-%d): %m", d);
	CHECK(kill(-l, SIGUSR1) == 0, "kill(-%d) (leaderless group): %m", l);
	pid_t b = 0;
	CHECK(read(bpipe[0], &b, sizeof(b)) == sizeof(b), "B's PID: %m");
	CHECK(getpgid(b) == b && getsid(b) == a, "B: pgid %d sid %d", getpgid(b), getsid(b));
	CHECK(kill(-b, SIGUSR1) == 0, "kill(-%d) (B's group in A's session): %m", b);
	for (int i = 0; i < n; i++) {
		st = 0;
		CHECK(waitpid(kids[i], &st, 0) == kids[i], "waitpid(%d): %m", kids[i]);
		CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child %d reported %#x", kids[i], st);
	}
	return zdtm_finish();
}
