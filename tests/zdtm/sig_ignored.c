/*
 * sig_ignored: ignored signals.
 *
 * SIGINT, SIGPIPE, SIGUSR1, SIGTERM, SIGRTMIN+3 and SIGCHLD are set to
 * SIG_IGN; SIGUSR2 keeps its default.  After go: sigaction() reports SIG_IGN
 * for each and SIG_DFL for SIGUSR2, the SigIgn/SigCgt masks in
 * /proc/self/status are unchanged, raising the ignored signals does nothing
 * (the process survives, nothing stays pending), writing to a pipe without
 * reader fails with EPIPE instead of killing, and because SIGCHLD is ignored
 * a child that exits is reaped automatically (waitpid() fails with ECHILD).
 */
#include "zdtm.h"
#include <signal.h>
#include <sys/wait.h>

int main(int argc, char **argv)
{
	int ign[] = { SIGINT, SIGPIPE, SIGUSR1, SIGTERM, SIGRTMIN + 3, SIGCHLD };
	int n = sizeof(ign) / sizeof(ign[0]);
	char ign0[32], cgt0[32], ign1[32], cgt1[32];
	struct sigaction sa;
	sigset_t pending;
	int p[2];

	zdtm_init(argc, argv);
	for (int i = 0; i < n; i++)
		signal(ign[i], SIG_IGN);
	zdtm_status_field("/proc/self/status", "SigIgn:", ign0, sizeof(ign0));
	zdtm_status_field("/proc/self/status", "SigCgt:", cgt0, sizeof(cgt0));

	zdtm_ready();
	zdtm_wait_go();

	zdtm_status_field("/proc/self/status", "SigIgn:", ign1, sizeof(ign1));
	zdtm_status_field("/proc/self/status", "SigCgt:", cgt1, sizeof(cgt1));
	CHECK(!strcmp(ign0, ign1), "SigIgn %s, was %s", ign1, ign0);
	CHECK(!strcmp(cgt0, cgt1), "SigCgt %s, was %s", cgt1, cgt0);
	for (int i = 0; i < n; i++) {
		sigaction(ign[i], NULL, &sa);
		CHECK(sa.sa_handler == SIG_IGN, "signal %d no longer ignored", ign[i]);
	}
	sigaction(SIGUSR2, NULL, &sa);
	CHECK(sa.sa_handler == SIG_DFL, "SIGUSR2 is not SIG_DFL");
	for (int i = 0; i < n; i++)
		kill(getpid(), ign[i]);
	sigpending(&pending);
	for (int i = 0; i < n; i++)
		CHECK(!sigismember(&pending, ign[i]), "ignored signal %d pending", ign[i]);

	if (pipe(p) == 0) {
		close(p[0]);
		CHECK(write(p[1], "x", 1) == -1 && errno == EPIPE, "write to broken pipe: %m");
		close(p[1]);
	}
	pid_t child = fork();
	if (child == 0)
		_exit(0);
	int st, r = waitpid(child, &st, 0); /* blocks until the child is reaped */
	CHECK(r == -1 && errno == ECHILD, "waitpid of child with SIGCHLD ignored gave %d (%m)", r);
	return zdtm_finish();
}
