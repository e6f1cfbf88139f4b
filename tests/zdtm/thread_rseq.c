/*
 * thread_rseq: restartable sequences (rseq) and sched_getcpu().
 *
 * glibc registers an rseq area for every thread, and sched_getcpu() reads
 * the CPU number the kernel writes there.  Before the dump each of two
 * threads (main + 1) checks its registration by re-registering the same
 * area: the kernel answers EBUSY only if exactly that area is registered.
 * After go each thread again checks for EBUSY, then pins itself to each
 * allowed CPU in turn and checks that sched_getcpu(), the rseq cpu_id field
 * and field 39 of /proc/thread-self/stat (and /proc/self/stat for the main
 * thread) all name that CPU (a stale or unregistered rseq area would report
 * the wrong CPU after a migration).
 */
#include "zdtm.h"
#include <pthread.h>
#include <sched.h>
#include <sys/rseq.h>

static int stop, ready_count, rseq_len;

static struct rseq *my_rseq(void)
{
	return (struct rseq *)((char *)pthread_self() + __rseq_offset);
}

/* errno of re-registering this thread's area (EBUSY = registered) */
static int probe(int len)
{
	if (syscall(SYS_rseq, my_rseq(), len, 0, RSEQ_SIG) == 0)
		return 0;
	return errno;
}

static int stat_cpu(const char *path)
{
	char buf[4096], *p;
	int cpu = -1;

	if (zdtm_read(path, buf, sizeof(buf)) < 0)
		return -1;
	p = strrchr(buf, ')') + 2; /* field 3 */
	for (int i = 3; i < 39; i++)
		p = strchr(p, ' ') + 1;
	sscanf(p, "%d", &cpu);
	return cpu;
}

static void check_cpus(const char *who)
{
	cpu_set_t orig, one;
	int checked = 0;

	sched_getaffinity(0, sizeof(orig), &orig);
	for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
		if (!CPU_ISSET(cpu, &orig))
			continue;
		CPU_ZERO(&one);
		CPU_SET(cpu, &one);
		if (sched_setaffinity(0, sizeof(one), &one)) {
			fail("%s: sched_setaffinity(%d): %m", who, cpu);
			continue;
		}
		sched_yield();
		int g = sched_getcpu(), s = stat_cpu("/proc/thread-self/stat");
		int r = __rseq_size ? (int)my_rseq()->cpu_id : cpu;
		CHECK(g == cpu && s == cpu && r == cpu,
		      "%s pinned to CPU %d: sched_getcpu %d, stat field 39 %d, rseq cpu_id %d",
		      who, cpu, g, s, r);
		if (!strcmp(who, "main")) /* the process-wide view is the main thread's */
			CHECK(stat_cpu("/proc/self/stat") == cpu, "/proc/self/stat field 39 is %d, "
			      "main thread pinned to CPU %d", stat_cpu("/proc/self/stat"), cpu);
		checked++;
	}
	sched_setaffinity(0, sizeof(orig), &orig);
	CHECK(checked > 0, "%s: no CPU to check", who);
}

static void *body(void *arg)
{
	const char *who = arg;

	if (rseq_len && probe(rseq_len) != EBUSY)
		fail("%s: rseq not registered before dump (%d)", who, probe(rseq_len));
	if (__atomic_add_fetch(&ready_count, 1, __ATOMIC_SEQ_CST) == 2)
		zdtm_ready();
	while (!__atomic_load_n(&stop, __ATOMIC_SEQ_CST)) {
		zdtm_sleep_ms(2);
		if (!strcmp(who, "main") && zdtm_go())
			__atomic_store_n(&stop, 1, __ATOMIC_SEQ_CST);
	}
	if (rseq_len) {
		int e = probe(rseq_len);
		CHECK(e == EBUSY, "%s: re-registering rseq gave %s, not EBUSY (not registered?)",
		      who, strerror(e));
	}
	check_cpus(who);
	return NULL;
}

int main(int argc, char **argv)
{
	pthread_t t;

	zdtm_init(argc, argv);
	if (__rseq_size == 0) {
		fprintf(stderr, "glibc did not register rseq: only checking sched_getcpu\n");
	} else {
		/* the registered length: glibc 2.35+ passes 32 or __rseq_size */
		rseq_len = probe(__rseq_size) == EBUSY ? (int)__rseq_size : 32;
		if (probe(rseq_len) != EBUSY)
			return fprintf(stderr, "cannot find the rseq length\n"), 1;
	}
	pthread_create(&t, NULL, body, "thread");
	while (__atomic_load_n(&ready_count, __ATOMIC_SEQ_CST) < 1)
		zdtm_sleep_ms(1);
	body("main");
	pthread_join(t, NULL);
	return zdtm_finish();
}
