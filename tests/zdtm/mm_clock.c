/*
 * mm_clock: clocks and the vDSO keep working.
 *
 * The loop reads CLOCK_MONOTONIC, CLOCK_REALTIME and CLOCK_BOOTTIME through
 * glibc (which uses the vDSO) and remembers the last values, checking each
 * read is >= the previous one.  After go: the clocks are still >= the last
 * values seen, the vDSO results agree with the raw clock_gettime syscall
 * (within 50 ms), gettimeofday()/time() agree with CLOCK_REALTIME, and
 * getauxval(AT_SYSINFO_EHDR) still points at the [vdso] mapping.
 */
#include "zdtm.h"
#include <sys/auxv.h>
#include <sys/time.h>

static int64_t ns(struct timespec t)
{
	return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static int64_t vdso_ns(clockid_t c)
{
	struct timespec t;

	clock_gettime(c, &t);
	return ns(t);
}

static int64_t sys_ns(clockid_t c)
{
	struct timespec t;

	syscall(SYS_clock_gettime, c, &t);
	return ns(t);
}

static const clockid_t clocks[] = { CLOCK_MONOTONIC, CLOCK_REALTIME, CLOCK_BOOTTIME };
static const char *names[] = { "MONOTONIC", "REALTIME", "BOOTTIME" };

int main(int argc, char **argv)
{
	int64_t last[3];
	char line[512];

	zdtm_init(argc, argv);
	for (int c = 0; c < 3; c++)
		last[c] = vdso_ns(clocks[c]);

	zdtm_ready();
	while (!zdtm_go()) {
		for (int c = 0; c < 3; c++) {
			int64_t now = vdso_ns(clocks[c]);

			/* REALTIME may be stepped by an admin; the others never */
			if (now < last[c] && c != 1)
				fail("CLOCK_%s went backwards while running", names[c]);
			last[c] = now;
		}
		zdtm_sleep_ms(2);
	}

	for (int c = 0; c < 3; c++) {
		int64_t v = vdso_ns(clocks[c]), s = sys_ns(clocks[c]);

		CHECK(v >= last[c] || c == 1, "CLOCK_%s went backwards: %ld < %ld",
		      names[c], v, last[c]);
		CHECK(llabs(s - v) < 50000000, "CLOCK_%s: vDSO %ld vs syscall %ld",
		      names[c], v, s);
	}
	for (int i = 0; i < 1000; i++) { /* monotonic in a tight loop, too */
		int64_t a = vdso_ns(CLOCK_MONOTONIC), b = vdso_ns(CLOCK_MONOTONIC);
		if (b < a) {
			fail("CLOCK_MONOTONIC not monotonic: %ld then %ld", a, b);
			break;
		}
	}
	struct timeval tv;
	gettimeofday(&tv, NULL);
	int64_t rt = vdso_ns(CLOCK_REALTIME);
	CHECK(llabs((int64_t)tv.tv_sec * 1000000000LL + tv.tv_usec * 1000LL - rt) < 50000000,
	      "gettimeofday disagrees with CLOCK_REALTIME");
	CHECK(llabs((int64_t)time(NULL) - rt / 1000000000LL) <= 1, "time() disagrees");
	struct timespec res;
	CHECK(clock_getres(CLOCK_MONOTONIC, &res) == 0 && ns(res) > 0 && ns(res) <= 1000000,
	      "clock_getres(CLOCK_MONOTONIC) = %ld ns", ns(res));
	unsigned long ehdr = getauxval(AT_SYSINFO_EHDR);
	CHECK(ehdr && zdtm_maps_line((void *)ehdr, line, sizeof(line)) == 0 &&
	      strstr(line, "[vdso]"), "AT_SYSINFO_EHDR %#lx is not in [vdso]", ehdr);
	return zdtm_finish();
}
