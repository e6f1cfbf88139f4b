/*
 * sig_itimer: interval timers.
 *
 * ITIMER_REAL fires every 10 ms (a SIGALRM handler counts ticks);
 * ITIMER_VIRTUAL and ITIMER_PROF are armed with long values (100 s, 1 s
 * interval) so they never fire.  After go: getitimer() shows the same
 * intervals and non-zero remaining values no larger than before (within
 * 20 ms of tick rounding), and
 * ITIMER_REAL keeps firing: at least 10 more ticks within 400 ms.
 */
#include "zdtm.h"
#include <signal.h>
#include <sys/time.h>

static volatile int ticks;

static void on_alarm(int sig)
{
	ticks++;
}

static long us(struct timeval t)
{
	return t.tv_sec * 1000000L + t.tv_usec;
}

int main(int argc, char **argv)
{
	struct sigaction sa = { .sa_handler = on_alarm, .sa_flags = SA_RESTART };
	struct itimerval real = { { 0, 10000 }, { 0, 10000 } };
	struct itimerval slow = { { 1, 0 }, { 100, 0 } }, now, before[2];
	int which[2] = { ITIMER_VIRTUAL, ITIMER_PROF };

	zdtm_init(argc, argv);
	sigaction(SIGALRM, &sa, NULL);
	setitimer(ITIMER_REAL, &real, NULL);
	setitimer(ITIMER_VIRTUAL, &slow, NULL);
	setitimer(ITIMER_PROF, &slow, NULL);
	while (ticks < 3)
		zdtm_sleep_ms(5);
	for (int i = 0; i < 2; i++)
		getitimer(which[i], &before[i]);

	zdtm_ready();
	zdtm_wait_go();

	getitimer(ITIMER_REAL, &now);
	CHECK(us(now.it_interval) == 10000, "ITIMER_REAL interval %ld us", us(now.it_interval));
	CHECK(us(now.it_value) > 0 && us(now.it_value) <= 10000,
	      "ITIMER_REAL value %ld us", us(now.it_value));
	for (int i = 0; i < 2; i++) {
		getitimer(which[i], &now);
		CHECK(us(now.it_interval) == 1000000, "itimer %d interval %ld us", which[i],
		      us(now.it_interval));
		/* CPU timers count in ticks: allow 20 ms of rounding */
		CHECK(us(now.it_value) > 0 && us(now.it_value) <= us(before[i].it_value) + 20000,
		      "itimer %d value %ld us, was %ld us", which[i], us(now.it_value),
		      us(before[i].it_value));
	}
	int t0 = ticks;
	zdtm_sleep_ms(400);
	CHECK(ticks - t0 >= 10, "ITIMER_REAL: only %d ticks in 400 ms", ticks - t0);
	return zdtm_finish();
}
