/*
 * proc_rlimits: resource limits.
 *
 * Lowers RLIMIT_NOFILE (soft 200, hard 300), RLIMIT_CORE (soft 0, hard
 * 1 MiB) and the RLIMIT_STACK soft limit (4 MiB), and sets RLIMIT_MSGQUEUE
 * and RLIMIT_NPROC soft limits, never raising anything above its current
 * hard limit.  After go: getrlimit() gives the same values for every
 * resource, /proc/self/limits is unchanged, and the lowered NOFILE limit is
 * enforced (dup2() to fd 200 fails with EBADF, fd 199 works).
 */
#include "zdtm.h"
#include <sys/resource.h>

static rlim_t cap(rlim_t want, rlim_t hard)
{
	return hard != RLIM_INFINITY && want > hard ? hard : want;
}

static void lower(int res, rlim_t soft, rlim_t hard)
{
	struct rlimit r;

	getrlimit(res, &r);
	hard = cap(hard, r.rlim_max);
	soft = cap(soft, hard);
	r.rlim_cur = soft;
	r.rlim_max = hard;
	if (setrlimit(res, &r))
		fprintf(stderr, "setrlimit(%d): %m\n", res);
}

int main(int argc, char **argv)
{
	static char lim0[8192], lim1[8192];
	struct rlimit r0[RLIM_NLIMITS], r1;
	struct rlimit st;

	zdtm_init(argc, argv);
	lower(RLIMIT_NOFILE, 200, 300);
	lower(RLIMIT_CORE, 0, 1 << 20);
	getrlimit(RLIMIT_STACK, &st);
	lower(RLIMIT_STACK, 4 << 20, st.rlim_max);
	getrlimit(RLIMIT_MSGQUEUE, &st);
	lower(RLIMIT_MSGQUEUE, 12345, st.rlim_max);
	getrlimit(RLIMIT_NPROC, &st);
	lower(RLIMIT_NPROC, 4321, st.rlim_max);
	for (int i = 0; i < RLIM_NLIMITS; i++)
		getrlimit(i, &r0[i]);
	if (r0[RLIMIT_NOFILE].rlim_cur != 200)
		return fprintf(stderr, "cannot set RLIMIT_NOFILE\n"), 1;
	zdtm_read("/proc/self/limits", lim0, sizeof(lim0));

	zdtm_ready();
	zdtm_wait_go();

	for (int i = 0; i < RLIM_NLIMITS; i++) {
		getrlimit(i, &r1);
		CHECK(r1.rlim_cur == r0[i].rlim_cur && r1.rlim_max == r0[i].rlim_max,
		      "rlimit %d: %#lx/%#lx, was %#lx/%#lx", i, r1.rlim_cur, r1.rlim_max,
		      r0[i].rlim_cur, r0[i].rlim_max);
	}
	zdtm_read("/proc/self/limits", lim1, sizeof(lim1));
	CHECK(!strcmp(lim0, lim1), "/proc/self/limits changed");
	CHECK(dup2(0, 200) == -1 && errno == EBADF, "dup2 to fd 200 not refused by NOFILE 200");
	CHECK(dup2(0, 199) == 199, "dup2 to fd 199 failed: %m");
	close(199);
	return zdtm_finish();
}
