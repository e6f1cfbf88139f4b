/*
 * mem_prot_none: PROT_NONE guard areas.
 *
 * A 16 MiB PROT_NONE reservation gets a 4 MiB read-write window in the
 * middle (guards of 4 MiB below and 8 MiB above), like a thread stack or a
 * JIT heap.  A second 1 MiB area is filled with data and then made PROT_NONE
 * (its content must survive although it cannot be read until mprotect()).
 * After go: guard areas are still "---p" in /proc/self/maps and really
 * fault on access (SIGSEGV caught with sigsetjmp), the window is "rw-p" with
 * its data, and the hidden area's data is back once made readable again.
 */
#include "zdtm.h"
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>

#define MB (1UL << 20)

static sigjmp_buf jb;

static void on_segv(int sig)
{
	siglongjmp(jb, 1);
}

/* 1 if reading addr faults */
static int faults(volatile char *addr)
{
	if (sigsetjmp(jb, 1))
		return 1;
	(void)*addr;
	return 0;
}

int main(int argc, char **argv)
{
	char *res, *win, *hidden, perms[5];
	uint64_t *w, sum = 0;

	zdtm_init(argc, argv);
	res = mmap(NULL, 16 * MB, PROT_NONE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	hidden = mmap(NULL, MB, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (res == MAP_FAILED || hidden == MAP_FAILED)
		return perror("mmap"), 1;
	win = res + 4 * MB;
	if (mprotect(win, 4 * MB, PROT_READ | PROT_WRITE))
		return perror("mprotect"), 1;
	w = (uint64_t *)win;
	for (size_t i = 0; i < 4 * MB / 8; i++)
		w[i] = zdtm_mix(i);
	for (size_t i = 0; i < MB / 8; i++)
		((uint64_t *)hidden)[i] = zdtm_mix(i ^ 0x4444);
	mprotect(hidden, MB, PROT_NONE);
	signal(SIGSEGV, on_segv);

	zdtm_ready();
	while (!zdtm_go()) {
		for (size_t i = 0; i < 4 * MB / 8; i += 509)
			sum += w[i];
		zdtm_sleep_ms(2);
	}
	(void)sum;

	CHECK(!strcmp(zdtm_maps_perms(res, perms), "---p"), "low guard perms %s", perms);
	CHECK(!strcmp(zdtm_maps_perms(win - 1, perms), "---p"), "low guard end perms %s", perms);
	CHECK(!strcmp(zdtm_maps_perms(win, perms), "rw-p"), "window perms %s", perms);
	CHECK(!strcmp(zdtm_maps_perms(win + 4 * MB, perms), "---p"), "high guard perms %s", perms);
	CHECK(!strcmp(zdtm_maps_perms(res + 16 * MB - 1, perms), "---p"),
	      "high guard end perms %s", perms);
	CHECK(!strcmp(zdtm_maps_perms(hidden, perms), "---p"), "hidden area perms %s", perms);
	CHECK(faults(res), "low guard readable");
	CHECK(faults(win - 1), "page below the window readable");
	CHECK(faults(win + 4 * MB), "page above the window readable");
	CHECK(faults(hidden + 100), "hidden area readable");
	CHECK(!faults(win) && !faults(win + 4 * MB - 1), "window not readable");
	for (size_t i = 0; i < 4 * MB / 8; i++)
		if (w[i] != zdtm_mix(i)) {
			fail("window word %zu wrong", i);
			break;
		}
	if (mprotect(hidden, MB, PROT_READ))
		fail("mprotect hidden: %m");
	else
		for (size_t i = 0; i < MB / 8; i++)
			if (((uint64_t *)hidden)[i] != zdtm_mix(i ^ 0x4444)) {
				fail("data behind PROT_NONE lost (word %zu)", i);
				break;
			}
	return zdtm_finish();
}
