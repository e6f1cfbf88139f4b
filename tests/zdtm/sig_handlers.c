/*
 * sig_handlers: signal dispositions with flags and masks.
 *
 *   SIGUSR1: SA_SIGINFO|SA_RESTART, sa_mask {SIGUSR2, SIGTERM}
 *   SIGUSR2: plain handler, SA_NODEFER|SA_RESETHAND
 *   SIGHUP:  plain handler, no flags (so no SA_RESTART)
 * After go, sigaction() queries must return exactly what was installed
 * before the dump (handler, flags, restorer, mask), and raising checks the
 * behaviour: inside the SIGUSR1 handler SIGUSR1/SIGUSR2/SIGTERM are blocked
 * and si_code is SI_TKILL; inside the SIGUSR2 handler SIGUSR2 is not
 * blocked, and afterwards SIGUSR2 is back to SIG_DFL; a read() from an
 * empty pipe interrupted by SIGUSR1 is restarted (SA_RESTART) while one
 * interrupted by SIGHUP fails with EINTR.
 */
#include "zdtm.h"
#include <pthread.h>
#include <signal.h>

static volatile int usr1_hits, usr1_masked, usr1_code, usr2_hits, usr2_self_blocked, hup_hits;

static void on_usr1(int sig, siginfo_t *si, void *uc)
{
	sigset_t cur;

	sigprocmask(SIG_BLOCK, NULL, &cur);
	usr1_masked = sigismember(&cur, SIGUSR1) && sigismember(&cur, SIGUSR2) &&
		      sigismember(&cur, SIGTERM);
	usr1_code = si->si_code;
	usr1_hits++;
}

static void on_usr2(int sig)
{
	sigset_t cur;

	sigprocmask(SIG_BLOCK, NULL, &cur);
	usr2_self_blocked = sigismember(&cur, SIGUSR2);
	usr2_hits++;
}

static void on_hup(int sig)
{
	hup_hits++;
}

static const int sigs[3] = { SIGUSR1, SIGUSR2, SIGHUP };
static struct sigaction before[3];

static void query(int sig, struct sigaction *sa)
{
	memset(sa, 0, sizeof(*sa));
	sigaction(sig, NULL, sa);
}

static int same_action(const struct sigaction *a, const struct sigaction *b)
{
	if (a->sa_sigaction != b->sa_sigaction || a->sa_flags != b->sa_flags ||
	    a->sa_restorer != b->sa_restorer)
		return 0;
	for (int s = 1; s < NSIG; s++)
		if (sigismember(&a->sa_mask, s) != sigismember(&b->sa_mask, s))
			return 0;
	return 1;
}

struct kick {
	pid_t tid;
	int sig, fd;
};

/* wait until the target thread sleeps in read(), signal it, then write */
static void *kicker(void *arg)
{
	struct kick *k = arg;
	char path[64], buf[64];

	snprintf(path, sizeof(path), "/proc/self/task/%d/syscall", k->tid);
	for (int i = 0; i < 500; i++) {
		if (zdtm_read(path, buf, sizeof(buf)) > 0 && buf[0] >= '0' &&
		    buf[0] <= '9' && atoi(buf) == SYS_read)
			break;
		zdtm_sleep_ms(1);
	}
	zdtm_sleep_ms(5);
	syscall(SYS_tgkill, getpid(), k->tid, k->sig);
	zdtm_sleep_ms(50);
	if (write(k->fd, "x", 1) != 1)
		perror("write");
	return NULL;
}

/* read() interrupted by sig: returns what read() returned (errno on -1) */
static int interrupted_read(int sig)
{
	int p[2], ret;
	char c;
	pthread_t t;
	struct kick k;

	if (pipe(p))
		return -1000;
	k = (struct kick){ zdtm_gettid(), sig, p[1] };
	pthread_create(&t, NULL, kicker, &k);
	ret = read(p[0], &c, 1);
	if (ret < 0)
		ret = -errno;
	pthread_join(t, NULL);
	close(p[0]);
	close(p[1]);
	return ret;
}

int main(int argc, char **argv)
{
	struct sigaction sa, now;

	zdtm_init(argc, argv);
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_usr1;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	sigemptyset(&sa.sa_mask);
	sigaddset(&sa.sa_mask, SIGUSR2);
	sigaddset(&sa.sa_mask, SIGTERM);
	sigaction(SIGUSR1, &sa, NULL);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_usr2;
	sa.sa_flags = SA_NODEFER | SA_RESETHAND;
	sigaction(SIGUSR2, &sa, NULL);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_hup;
	sigaction(SIGHUP, &sa, NULL);
	for (int i = 0; i < 3; i++)
		query(sigs[i], &before[i]);

	zdtm_ready();
	zdtm_wait_go();

	for (int i = 0; i < 3; i++) {
		query(sigs[i], &now);
		CHECK(same_action(&now, &before[i]),
		      "signal %d: handler %p flags %#x restorer %p, was %p %#x %p", sigs[i],
		      (void *)now.sa_sigaction, now.sa_flags, (void *)now.sa_restorer,
		      (void *)before[i].sa_sigaction, before[i].sa_flags,
		      (void *)before[i].sa_restorer);
	}
	CHECK(before[0].sa_flags & SA_SIGINFO && before[0].sa_flags & SA_RESTART &&
	      sigismember(&before[0].sa_mask, SIGUSR2) && sigismember(&before[0].sa_mask, SIGTERM),
	      "SIGUSR1 action not as installed");

	raise(SIGUSR1);
	CHECK(usr1_hits == 1 && usr1_masked && usr1_code == SI_TKILL,
	      "SIGUSR1: hits %d, mask ok %d, si_code %d", usr1_hits, usr1_masked, usr1_code);
	raise(SIGUSR2);
	CHECK(usr2_hits == 1 && !usr2_self_blocked, "SIGUSR2: hits %d, self blocked %d",
	      usr2_hits, usr2_self_blocked);
	query(SIGUSR2, &now);
	CHECK(now.sa_handler == SIG_DFL, "SIGUSR2 not reset to SIG_DFL (SA_RESETHAND)");
	raise(SIGHUP);
	CHECK(hup_hits == 1, "SIGHUP: hits %d", hup_hits);

	int r = interrupted_read(SIGUSR1);
	CHECK(r == 1 && usr1_hits == 2, "read() with SA_RESTART handler returned %d (hits %d)", r,
	      usr1_hits);
	r = interrupted_read(SIGHUP);
	CHECK(r == -EINTR && hup_hits == 2, "read() without SA_RESTART returned %d (hits %d)", r,
	      hup_hits);
	return zdtm_finish();
}
