/*
 * refused_state FEATURE READYFILE: set up one kind of state snapshotd does
 * not restore yet, write READYFILE, then sleep until killed.  The dump must
 * refuse it with one line naming the feature (tests/test_refused.py).
 */
#define _GNU_SOURCE
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

static void *thread_other_gid(void *arg)
{
	(void)arg;
	syscall(SYS_setresgid, -1, 1, -1); /* this thread only (the raw call, not glibc's) */
	for (;;)
		pause();
	return NULL;
}

static int shared_table_child(void *arg)
{
	(void)arg;
	for (;;)
		pause();
	return 0;
}

int main(int argc, char **argv)
{
	if (argc != 3)
		return 2;
	const char *f = argv[1];
	static char page[4096 * 4] __attribute__((aligned(4096)));
	memset(page, 1, sizeof(page));
	if (!strcmp(f, "timer")) {
		timer_t t;
		struct sigevent ev = { .sigev_notify = SIGEV_NONE };
		if (timer_create(CLOCK_MONOTONIC, &ev, &t))
			return 1;
	} else if (!strcmp(f, "seccomp")) {
		struct sock_filter allow[] = { BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW) };
		struct sock_fprog prog = { 1, allow };
		if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog))
			return 1;
	} else if (!strcmp(f, "thp")) {
		if (prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0))
			return 1;
	} else if (!strcmp(f, "pdeathsig")) {
		if (prctl(PR_SET_PDEATHSIG, SIGUSR1))
			return 1;
	} else if (!strcmp(f, "mlock")) {
		if (mlock(page, 4096))
			return 1;
	} else if (!strcmp(f, "sequential")) {
		if (madvise(page, sizeof(page), MADV_SEQUENTIAL))
			return 1;
	} else if (!strcmp(f, "thread-gid")) {
		pthread_t th;
		if (pthread_create(&th, NULL, thread_other_gid, NULL))
			return 1;
		usleep(50000);
	} else if (!strcmp(f, "deleted-cwd") || !strcmp(f, "deleted-dir-fd")) {
		char d[] = "/tmp/snapshotd-refusedXXXXXX";
		if (!mkdtemp(d))
			return 1;
		int fd = open(d, O_RDONLY | O_DIRECTORY);
		if (fd < 0 || (!strcmp(f, "deleted-cwd") && chdir(d)) || rmdir(d))
			return 1;
		if (!strcmp(f, "deleted-cwd"))
			close(fd);
	} else if (!strcmp(f, "clone-files")) {
		static char stack[65536];
		if (clone(shared_table_child, stack + sizeof(stack), CLONE_FILES | SIGCHLD, NULL) < 0)
			return 1;
	} else {
		return 2;
	}
	FILE *r = fopen(argv[2], "w");
	if (!r)
		return 1;
	fprintf(r, "%d\n", getpid());
	fclose(r);
	for (;;)
		pause();
}
