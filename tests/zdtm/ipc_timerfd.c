/*
 * ipc_timerfd: armed timerfds.
 *
 * a: CLOCK_MONOTONIC, first expiry in 300 ms, then every 50 ms;
 * b: CLOCK_REALTIME, TFD_TIMER_ABSTIME deadline 30 s ahead, no interval;
 * c: CLOCK_MONOTONIC one-shot that expired (one unread tick), now disarmed;
 * d: created, never armed, O_NONBLOCK;
 * e: CLOCK_MONOTONIC every 20 ms from 1 ms on, never read (the kernel shows
 *    such a timer with no time left until it is read).
 * After go: timerfd_gettime shows the same intervals and remaining values
 * no larger than before; "c" reads 1; "d" gives EAGAIN; "a" fires and its
 * next expirations come 50 ms apart (5 expirations within 150..600 ms);
 * "e" has ticks to read and keeps firing.
 */
#include "zdtm.h"
#include <sys/timerfd.h>

static long long ns(struct timespec t)
{
	return t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(int argc, char **argv)
{
	struct itimerspec sa = { { 0, 50000000 }, { 0, 300000000 } }, sb = { 0 }, sc = { { 0, 0 }, { 0, 1000000 } };
	struct itimerspec g, ga0, gb0;
	struct timespec now, t0, t1;
	uint64_t v;
	int a, b, c, d, e, n = 0;
	struct itimerspec se = { { 0, 20000000 }, { 0, 1000000 } };

	zdtm_init(argc, argv);
	a = timerfd_create(CLOCK_MONOTONIC, 0);
	b = timerfd_create(CLOCK_REALTIME, 0);
	c = timerfd_create(CLOCK_MONOTONIC, 0);
	d = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
	e = timerfd_create(CLOCK_MONOTONIC, 0);
	clock_gettime(CLOCK_REALTIME, &now);
	sb.it_value.tv_sec = now.tv_sec + 30;
	if (a < 0 || b < 0 || c < 0 || d < 0 || timerfd_settime(a, 0, &sa, NULL) ||
	    timerfd_settime(b, TFD_TIMER_ABSTIME, &sb, NULL) || e < 0 || timerfd_settime(e, 0, &se, NULL))
		return perror("timerfd"), 1;
	/* a one-shot that expired: one unread tick, disarmed */
	timerfd_settime(c, 0, &sc, NULL);
	zdtm_sleep_ms(5);
	timerfd_gettime(a, &ga0);
	timerfd_gettime(b, &gb0);

	zdtm_ready();
	zdtm_wait_go();

	timerfd_gettime(a, &g);
	CHECK(ns(g.it_interval) == 50000000, "a interval %lld", ns(g.it_interval));
	CHECK(ns(g.it_value) > 0 && ns(g.it_value) <= ns(ga0.it_value), "a value %lld, was %lld",
	      ns(g.it_value), ns(ga0.it_value));
	timerfd_gettime(b, &g);
	CHECK(ns(g.it_interval) == 0, "b interval %lld", ns(g.it_interval));
	CHECK(ns(g.it_value) > 20000000000LL && ns(g.it_value) <= ns(gb0.it_value), "b value %lld, was %lld",
	      ns(g.it_value), ns(gb0.it_value));
	timerfd_gettime(c, &g);
	CHECK(ns(g.it_value) == 0, "c armed again");
	fcntl(c, F_SETFL, O_NONBLOCK);
	CHECK(read(c, &v, 8) == 8 && v == 1, "c read %llu ticks, want 1", (unsigned long long)v);
	CHECK(read(d, &v, 8) == -1 && errno == EAGAIN, "d not empty or blocking");
	CHECK(fcntl(d, F_GETFL) & O_NONBLOCK, "d lost O_NONBLOCK");
	CHECK(read(e, &v, 8) == 8 && v >= 1, "e: no ticks");
	CHECK(read(e, &v, 8) == 8 && v >= 1, "e stopped firing");
	/* a fires; then 5 expirations 50 ms apart */
	CHECK(read(a, &v, 8) == 8 && v >= 1, "a did not fire");
	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (n < 5 && read(a, &v, 8) == 8)
		n += v;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	CHECK(n >= 5 && ns(t1) - ns(t0) >= 150000000LL && ns(t1) - ns(t0) < 600000000LL,
	      "a: %d expirations in %lld ms", n, (ns(t1) - ns(t0)) / 1000000);
	return zdtm_finish();
}
