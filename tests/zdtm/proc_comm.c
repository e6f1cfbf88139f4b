/*
 * proc_comm: process and thread names.
 *
 * The main thread renames itself with prctl(PR_SET_NAME, "zdtm-main-nm")
 * and a second thread with pthread_setname_np(.., "zdtm-worker").  After
 * go: PR_GET_NAME, /proc/self/comm, /proc/self/task/TID/comm of both threads
 * and pthread_getname_np() show the same names.
 */
#include "zdtm.h"
#include <pthread.h>
#include <sys/prctl.h>

static int stop;
static pid_t worker_tid;

static void *worker(void *arg)
{
	worker_tid = zdtm_gettid();
	while (!__atomic_load_n(&stop, __ATOMIC_SEQ_CST))
		zdtm_sleep_ms(2);
	return NULL;
}

static void check_comm(const char *path, const char *want)
{
	char buf[64];

	if (zdtm_read(path, buf, sizeof(buf)) < 0)
		return fail("cannot read %s", path);
	buf[strcspn(buf, "\n")] = 0;
	CHECK(!strcmp(buf, want), "%s is '%s', expected '%s'", path, buf, want);
}

int main(int argc, char **argv)
{
	char name[32] = "", path[64];
	pthread_t t;

	zdtm_init(argc, argv);
	prctl(PR_SET_NAME, "zdtm-main-nm");
	pthread_create(&t, NULL, worker, NULL);
	pthread_setname_np(t, "zdtm-worker");
	while (!__atomic_load_n(&worker_tid, __ATOMIC_SEQ_CST))
		zdtm_sleep_ms(1);

	zdtm_ready();
	zdtm_wait_go();

	prctl(PR_GET_NAME, name);
	CHECK(!strcmp(name, "zdtm-main-nm"), "PR_GET_NAME '%s'", name);
	check_comm("/proc/self/comm", "zdtm-main-nm");
	snprintf(path, sizeof(path), "/proc/self/task/%d/comm", getpid());
	check_comm(path, "zdtm-main-nm");
	snprintf(path, sizeof(path), "/proc/self/task/%d/comm", worker_tid);
	check_comm(path, "zdtm-worker");
	name[0] = 0;
	pthread_getname_np(t, name, sizeof(name));
	CHECK(!strcmp(name, "zdtm-worker"), "pthread_getname_np '%s'", name);
	__atomic_store_n(&stop, 1, __ATOMIC_SEQ_CST);
	pthread_join(t, NULL);
	return zdtm_finish();
}
