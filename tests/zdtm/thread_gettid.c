/*
 * thread_gettid: a multithreaded computation keeps its TIDs and results.
 *
 * 4 threads each record gettid() and pthread_self(), then run an integer +
 * floating point recurrence (kept in registers) until the main thread, having
 * seen go, sets a stop flag.  Each thread then checks gettid() and
 * pthread_self() are unchanged and stores its step count and state.  After
 * pthread_join() (needs the kernel's clear-child-tid to work), the main thread
 * recomputes every recurrence for the same number of steps and compares, and
 * checks /proc/self/task lists exactly the same TIDs as before the dump.  A
 * new thread is created and joined at the end.
 */
#include "zdtm.h"
#include <dirent.h>
#include <pthread.h>

#define NTHR 4

struct worker {
	pthread_t self;
	pid_t tid;
	uint64_t steps, x;
	double f;
	int tid_changed;
};

static struct worker w[NTHR];
static int stop, started;

static inline void step(uint64_t *x, double *f)
{
	*x = *x * 6364136223846793005ULL + 1442695040888963407ULL;
	*f = *f * 0.999999 + (double)(*x >> 11) * 1e-18;
}

static void *worker(void *arg)
{
	struct worker *me = arg;
	uint64_t x = (uint64_t)(me - w) + 1, n = 0;
	double f = 1.0;

	me->tid = zdtm_gettid();
	me->self = pthread_self();
	__atomic_add_fetch(&started, 1, __ATOMIC_SEQ_CST);
	while (!__atomic_load_n(&stop, __ATOMIC_RELAXED)) {
		for (int i = 0; i < 20000; i++)
			step(&x, &f);
		n += 20000;
		zdtm_sleep_ms(1);
	}
	me->tid_changed = me->tid != zdtm_gettid() || !pthread_equal(me->self, pthread_self());
	me->steps = n;
	me->x = x;
	me->f = f;
	return (void *)0x1234;
}

static void *noop(void *arg)
{
	return arg;
}

/* sorted TIDs from /proc/self/task */
static int list_tasks(pid_t *out, int max)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	int n = 0;

	while (d && (e = readdir(d)))
		if (e->d_name[0] != '.' && n < max)
			out[n++] = atoi(e->d_name);
	if (d)
		closedir(d);
	for (int i = 0; i < n; i++)
		for (int j = i + 1; j < n; j++)
			if (out[j] < out[i]) {
				pid_t t = out[i];
				out[i] = out[j];
				out[j] = t;
			}
	return n;
}

int main(int argc, char **argv)
{
	pid_t t0[16], t1[16];
	int n0, n1;
	void *ret;
	pthread_t extra;

	zdtm_init(argc, argv);
	for (int i = 0; i < NTHR; i++)
		pthread_create(&w[i].self, NULL, worker, &w[i]);
	while (__atomic_load_n(&started, __ATOMIC_SEQ_CST) < NTHR)
		zdtm_sleep_ms(1);
	n0 = list_tasks(t0, 16);
	CHECK(n0 == NTHR + 1, "%d tasks before dump", n0);

	zdtm_ready();
	zdtm_wait_go();

	n1 = list_tasks(t1, 16);
	CHECK(n1 == n0 && !memcmp(t0, t1, n0 * sizeof(pid_t)),
	      "/proc/self/task changed (%d tasks, had %d)", n1, n0);
	CHECK(zdtm_gettid() == getpid(), "main thread tid %d != pid %d", zdtm_gettid(), getpid());
	__atomic_store_n(&stop, 1, __ATOMIC_SEQ_CST);
	for (int i = 0; i < NTHR; i++) {
		uint64_t x = i + 1;
		double f = 1.0;

		CHECK(pthread_join(w[i].self, &ret) == 0 && ret == (void *)0x1234,
		      "join of thread %d failed", i);
		CHECK(!w[i].tid_changed, "thread %d: gettid()/pthread_self() changed", i);
		CHECK(w[i].steps > 0, "thread %d did no work", i);
		for (uint64_t s = 0; s < w[i].steps; s++)
			step(&x, &f);
		CHECK(x == w[i].x && f == w[i].f,
		      "thread %d: result after %lu steps is %#lx/%a, expected %#lx/%a", i,
		      w[i].steps, w[i].x, w[i].f, x, f);
	}
	CHECK(pthread_create(&extra, NULL, noop, (void *)7) == 0 &&
	      pthread_join(extra, &ret) == 0 && ret == (void *)7, "new thread failed");
	return zdtm_finish();
}
