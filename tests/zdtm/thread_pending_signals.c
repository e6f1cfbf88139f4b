/*
 * thread_pending_signals: blocked signals pending across the dump.
 *
 * With the signals blocked, before the dump the program queues:
 *   - SIGUSR1 to the process (kill: shared pending, SI_USER);
 *   - SIGRTMIN+1 twice to the process with sigqueue values 11 and 22;
 *   - SIGRTMIN+2 to the main thread with tgkill (SI_TKILL);
 *   - SIGUSR2 to a second thread T with tgkill.
 * T keeps all of them blocked except SIGUSR2, which it unblocks on request;
 * the main thread never unblocks SIGUSR2.  After go: ShdPnd and the SigPnd
 * of both threads in /proc are unchanged and sigpending() in main shows its
 * signals.  Main unblocks its signals: the SA_SIGINFO handler must run once
 * for SIGUSR1 and SIGRTMIN+2 and twice for SIGRTMIN+1 (values 11 then 22),
 * with the right si_code and si_pid, in the main thread.  Then T unblocks
 * SIGUSR2 and the handler must run once, in T, with si_code SI_TKILL.
 */
#include "zdtm.h"
#include <pthread.h>
#include <signal.h>

struct hit {
	int sig, code, val, pid;
	pid_t tid;
};

static struct hit hits[16];
static int nhits, t_unblock, t_done;
static pid_t t_tid;

static void handler(int sig, siginfo_t *si, void *uc)
{
	int i = __atomic_fetch_add(&nhits, 1, __ATOMIC_SEQ_CST);

	if (i < 16)
		hits[i] = (struct hit){ sig, si->si_code, si->si_value.sival_int, si->si_pid,
					zdtm_gettid() };
}

static void pend(const char *file, const char *key, char *out)
{
	if (zdtm_status_field(file, key, out, 32))
		strcpy(out, "?");
}

static void *thread(void *arg)
{
	sigset_t s;

	t_tid = zdtm_gettid();
	while (!__atomic_load_n(&t_unblock, __ATOMIC_SEQ_CST))
		zdtm_sleep_ms(2);
	sigemptyset(&s);
	sigaddset(&s, SIGUSR2);
	pthread_sigmask(SIG_UNBLOCK, &s, NULL);
	__atomic_store_n(&t_done, 1, __ATOMIC_SEQ_CST);
	return NULL;
}

int main(int argc, char **argv)
{
	struct sigaction sa = { .sa_sigaction = handler, .sa_flags = SA_SIGINFO };
	sigset_t block, pending;
	char tstatus[64], shd0[32], mp0[32], tp0[32], shd1[32], mp1[32], tp1[32];
	pthread_t t;
	int rt1 = SIGRTMIN + 1, rt2 = SIGRTMIN + 2;

	zdtm_init(argc, argv);
	sigemptyset(&block);
	sigaddset(&block, SIGUSR1);
	sigaddset(&block, SIGUSR2);
	sigaddset(&block, rt1);
	sigaddset(&block, rt2);
	sigprocmask(SIG_BLOCK, &block, NULL); /* inherited by T */
	sa.sa_mask = block; /* one handler at a time, no nesting */
	sigaction(SIGUSR1, &sa, NULL);
	sigaction(SIGUSR2, &sa, NULL);
	sigaction(rt1, &sa, NULL);
	sigaction(rt2, &sa, NULL);
	pthread_create(&t, NULL, thread, NULL);
	while (!__atomic_load_n(&t_tid, __ATOMIC_SEQ_CST))
		zdtm_sleep_ms(1);

	kill(getpid(), SIGUSR1);
	sigqueue(getpid(), rt1, (union sigval){ .sival_int = 11 });
	sigqueue(getpid(), rt1, (union sigval){ .sival_int = 22 });
	syscall(SYS_tgkill, getpid(), zdtm_gettid(), rt2);
	syscall(SYS_tgkill, getpid(), t_tid, SIGUSR2);
	snprintf(tstatus, sizeof(tstatus), "/proc/self/task/%d/status", t_tid);
	pend("/proc/self/status", "ShdPnd:", shd0);
	pend("/proc/self/status", "SigPnd:", mp0);
	pend(tstatus, "SigPnd:", tp0);

	zdtm_ready();
	zdtm_wait_go();

	pend("/proc/self/status", "ShdPnd:", shd1);
	pend("/proc/self/status", "SigPnd:", mp1);
	pend(tstatus, "SigPnd:", tp1);
	CHECK(!strcmp(shd0, shd1), "ShdPnd %s, was %s", shd1, shd0);
	CHECK(!strcmp(mp0, mp1), "main SigPnd %s, was %s", mp1, mp0);
	CHECK(!strcmp(tp0, tp1), "thread SigPnd %s, was %s", tp1, tp0);
	sigpending(&pending);
	CHECK(sigismember(&pending, SIGUSR1) && sigismember(&pending, rt1) &&
	      sigismember(&pending, rt2) && !sigismember(&pending, SIGUSR2),
	      "sigpending() in main is wrong");
	CHECK(nhits == 0, "%d signals delivered while blocked", nhits);

	sigdelset(&block, SIGUSR2);
	sigprocmask(SIG_UNBLOCK, &block, NULL); /* delivery happens here */
	CHECK(nhits == 4, "main got %d signals, expected 4", nhits);
	for (int i = 0; i < nhits && i < 4; i++)
		CHECK(hits[i].tid == getpid() && hits[i].pid == getpid(),
		      "signal %d: handled in %d, si_pid %d", hits[i].sig, hits[i].tid, hits[i].pid);
	/* the delivery order between different signals is not fixed, but the
	 * two queued SIGRTMIN+1 must come in order, with their values */
	int usr1 = 0, r2 = 0, r1 = 0;
	for (int i = 0; i < nhits && i < 4; i++) {
		struct hit *h = &hits[i];

		if (h->sig == SIGUSR1) {
			usr1++;
			CHECK(h->code == SI_USER, "SIGUSR1 si_code %d", h->code);
		} else if (h->sig == rt2) {
			r2++;
			CHECK(h->code == SI_TKILL, "SIGRTMIN+2 si_code %d", h->code);
		} else if (h->sig == rt1) {
			r1++;
			CHECK(h->code == SI_QUEUE && h->val == 11 * r1,
			      "SIGRTMIN+1 #%d: si_code %d value %d", r1, h->code, h->val);
		} else {
			fail("unexpected signal %d", h->sig);
		}
	}
	CHECK(usr1 == 1 && r1 == 2 && r2 == 1, "got SIGUSR1 x%d, SIGRTMIN+1 x%d, SIGRTMIN+2 x%d",
	      usr1, r1, r2);

	__atomic_store_n(&t_unblock, 1, __ATOMIC_SEQ_CST);
	pthread_join(t, NULL);
	CHECK(nhits == 5, "%d signals after the thread unblocked SIGUSR2, expected 5", nhits);
	if (nhits == 5)
		CHECK(hits[4].sig == SIGUSR2 && hits[4].tid == t_tid && hits[4].code == SI_TKILL,
		      "thread signal: sig %d in tid %d (T is %d) code %d", hits[4].sig,
		      hits[4].tid, t_tid, hits[4].code);
	return zdtm_finish();
}
