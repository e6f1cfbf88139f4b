/*
 * proc_sched: how the scheduler treats each thread.
 *
 * The main thread is pinned to the first CPU it may use, runs SCHED_BATCH
 * with nice 7; a second thread is pinned to the last CPU, runs SCHED_IDLE.
 * After go, each must still have its CPU set, policy and nice.
 */
#include "zdtm.h"
#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>

static int first = -1, last = -1;
static volatile int stop;
static int tbad;

static void *worker(void *arg)
{
	cpu_set_t s;
	struct sched_param p = { 0 };
	(void)arg;
	CPU_ZERO(&s);
	CPU_SET(last, &s);
	if (sched_setaffinity(0, sizeof(s), &s) || sched_setscheduler(0, SCHED_IDLE, &p))
		tbad |= 1;
	while (!stop)
		zdtm_sleep_ms(2);
	if (sched_getaffinity(0, sizeof(s), &s) || !CPU_ISSET(last, &s) || CPU_COUNT(&s) != 1)
		tbad |= 2;
	if (sched_getscheduler(0) != SCHED_IDLE)
		tbad |= 4;
	return NULL;
}

int main(int argc, char **argv)
{
	cpu_set_t s;
	struct sched_param p = { 0 };
	pthread_t th;
	zdtm_init(argc, argv);
	if (sched_getaffinity(0, sizeof(s), &s))
		return 1;
	for (int i = 0; i < CPU_SETSIZE; i++)
		if (CPU_ISSET(i, &s)) {
			if (first < 0)
				first = i;
			last = i;
		}
	CPU_ZERO(&s);
	CPU_SET(first, &s);
	if (sched_setaffinity(0, sizeof(s), &s) || sched_setscheduler(0, SCHED_BATCH, &p) ||
	    setpriority(PRIO_PROCESS, 0, 7))
		return perror("sched"), 1;
	if (pthread_create(&th, NULL, worker, NULL))
		return 1;
	zdtm_sleep_ms(50);
	zdtm_ready();
	zdtm_wait_go();
	stop = 1;
	pthread_join(th, NULL);
	CHECK(!(tbad & 1), "the thread could not set its scheduling");
	CHECK(!(tbad & 2), "the thread's CPU affinity was lost");
	CHECK(!(tbad & 4), "the thread's SCHED_IDLE policy was lost");
	CHECK(sched_getaffinity(0, sizeof(s), &s) == 0 && CPU_ISSET(first, &s) && CPU_COUNT(&s) == 1,
	      "the main thread's CPU affinity was lost");
	CHECK(sched_getscheduler(0) == SCHED_BATCH, "SCHED_BATCH was lost");
	errno = 0;
	CHECK(getpriority(PRIO_PROCESS, 0) == 7 && errno == 0, "nice 7 was lost (now %d)", getpriority(PRIO_PROCESS, 0));
	return zdtm_finish();
}
