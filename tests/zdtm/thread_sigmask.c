/*
 * thread_sigmask: per-thread blocked signal masks.
 *
 * The main thread blocks SIGUSR1; thread 1 blocks SIGUSR2, SIGRTMIN and
 * SIGRTMIN+5; thread 2 blocks SIGHUP, SIGTERM, SIGWINCH and SIGRTMAX;
 * thread 3 blocks nothing.  Each records its mask (pthread_sigmask) and its
 * SigBlk line from /proc/self/task/TID/status.  After go each thread checks
 * both are unchanged, and that its mask is exactly the one it set.
 */
#include "zdtm.h"
#include <pthread.h>
#include <signal.h>

#define NTHR 4

static int stop, ready_count;

static void set_of(int idx, sigset_t *s)
{
	sigemptyset(s);
	switch (idx) {
	case 0: sigaddset(s, SIGUSR1); break;
	case 1: sigaddset(s, SIGUSR2); sigaddset(s, SIGRTMIN); sigaddset(s, SIGRTMIN + 5); break;
	case 2: sigaddset(s, SIGHUP); sigaddset(s, SIGTERM); sigaddset(s, SIGWINCH);
		sigaddset(s, SIGRTMAX); break;
	}
}

static void sigblk(char *out, size_t len)
{
	char path[64];

	snprintf(path, sizeof(path), "/proc/self/task/%d/status", zdtm_gettid());
	if (zdtm_status_field(path, "SigBlk:", out, len))
		snprintf(out, len, "?");
}

static void *body(void *arg)
{
	long idx = (long)arg;
	sigset_t want, cur;
	char blk0[64], blk1[64];

	set_of(idx, &want);
	pthread_sigmask(SIG_SETMASK, &want, NULL);
	sigblk(blk0, sizeof(blk0));
	/* the main thread (index 0) comes last and declares readiness */
	if (__atomic_add_fetch(&ready_count, 1, __ATOMIC_SEQ_CST) == NTHR)
		zdtm_ready();
	while (!__atomic_load_n(&stop, __ATOMIC_SEQ_CST)) {
		zdtm_sleep_ms(2);
		if (idx == 0 && zdtm_go())
			__atomic_store_n(&stop, 1, __ATOMIC_SEQ_CST);
	}
	sigblk(blk1, sizeof(blk1));
	if (strcmp(blk0, blk1))
		fail("thread %ld: SigBlk %s, was %s", idx, blk1, blk0);
	pthread_sigmask(SIG_SETMASK, NULL, &cur);
	for (int s = 1; s < NSIG; s++)
		if (sigismember(&cur, s) != sigismember(&want, s)) {
			fail("thread %ld: signal %d %sblocked", idx, s,
			     sigismember(&cur, s) ? "" : "not ");
			break;
		}
	return NULL;
}

int main(int argc, char **argv)
{
	pthread_t t[NTHR];

	zdtm_init(argc, argv);
	for (long i = 1; i < NTHR; i++)
		pthread_create(&t[i], NULL, body, (void *)i);
	while (__atomic_load_n(&ready_count, __ATOMIC_SEQ_CST) < NTHR - 1)
		zdtm_sleep_ms(1);
	body((void *)0);
	for (int i = 1; i < NTHR; i++)
		pthread_join(t[i], NULL);
	return zdtm_finish();
}
