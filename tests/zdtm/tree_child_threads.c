/*
 * tree_child_threads: a multi-threaded child in a tree.
 *
 * The child starts two threads that keep counting and remember their TIDs;
 * the parent waits for go.  After go the child's threads check that their
 * counters still advance and their TIDs are unchanged, the child joins them
 * and exits 0 (or a bit mask of what failed); the parent reaps it.
 */
#include "zdtm.h"
#include <pthread.h>
#include <sys/wait.h>

struct worker {
	pthread_t t;
	pid_t tid;
	volatile unsigned long count;
	int bad;
};

static void *work(void *arg)
{
	struct worker *w = arg;
	w->tid = zdtm_gettid();
	while (!zdtm_go()) {
		w->count++;
		zdtm_sleep_ms(1);
	}
	unsigned long before = w->count;
	for (int i = 0; i < 5; i++) {
		w->count++;
		zdtm_sleep_ms(1);
	}
	w->bad = w->count != before + 5 || w->tid != zdtm_gettid();
	return NULL;
}

int main(int argc, char **argv)
{
	int st = 0, ready[2];

	zdtm_init(argc, argv);
	if (pipe(ready))
		return 2;
	pid_t child = fork();
	if (child == 0) {
		static struct worker w[2];
		int bad = 0;
		for (int i = 0; i < 2; i++)
			pthread_create(&w[i].t, NULL, work, &w[i]);
		while (!w[0].count || !w[1].count)
			zdtm_sleep_ms(1);
		(void)!write(ready[1], "r", 1);
		for (int i = 0; i < 2; i++) {
			pthread_join(w[i].t, NULL);
			bad |= w[i].bad << i;
		}
		_exit(bad);
	}
	char c;
	if (read(ready[0], &c, 1) != 1)
		return 2;
	zdtm_ready();
	zdtm_wait_go();
	CHECK(waitpid(child, &st, 0) == child, "waitpid: %m");
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child reported %#x (bit i: thread i stalled or changed TID)", st);
	return zdtm_finish();
}
