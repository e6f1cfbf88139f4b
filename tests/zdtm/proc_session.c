/*
 * proc_session: session and process group.
 *
 * The harness starts every program with start_new_session, so the program
 * leads its own session and process group.  A second thread is started too.
 * The program records getsid(0) and getpgrp() (both its PID) and checks them
 * again after go, from both threads; /proc/self/stat fields 5-6 (pgrp,
 * session) must agree.  Signalling the group with kill(0, SIGUSR1) (handler
 * installed) must reach this process.
 */
#include "zdtm.h"
#include <pthread.h>
#include <signal.h>

static volatile int hits;
static pid_t sid0, pgid0;

static void on_usr1(int sig)
{
	hits++;
}

static void *thread(void *arg)
{
	*(int *)arg = getsid(0) == sid0 && getpgrp() == pgid0;
	return NULL;
}

int main(int argc, char **argv)
{
	char buf[4096], *p;
	int pgrp = -1, sess = -1, thread_ok = 0;
	pthread_t t;

	zdtm_init(argc, argv);
	signal(SIGUSR1, on_usr1);
	sid0 = getsid(0);
	pgid0 = getpgrp();
	if (sid0 != getpid() || pgid0 != getpid())
		fprintf(stderr, "note: not a session leader (sid %d pgid %d)\n", sid0, pgid0);

	zdtm_ready();
	zdtm_wait_go();

	CHECK(getsid(0) == sid0, "session %d, was %d", getsid(0), sid0);
	CHECK(getpgrp() == pgid0, "process group %d, was %d", getpgrp(), pgid0);
	zdtm_read("/proc/self/stat", buf, sizeof(buf));
	p = strrchr(buf, ')');
	if (p)
		sscanf(p + 2, "%*c %*d %d %d", &pgrp, &sess);
	CHECK(pgrp == pgid0 && sess == sid0, "/proc/self/stat pgrp %d session %d", pgrp, sess);
	pthread_create(&t, NULL, thread, &thread_ok);
	pthread_join(t, NULL);
	CHECK(thread_ok, "a new thread sees another session or group");
	CHECK(kill(0, SIGUSR1) == 0 && hits == 1, "kill(0, SIGUSR1) did not reach us (%d)", hits);
	return zdtm_finish();
}
