/*
 * tree_cow_private: private memory shared copy-on-write after fork.
 *
 * The parent fills 4 MiB of private anonymous memory (one pattern per
 * page), then forks.  The child rewrites every even page with its own
 * pattern, the parent every page whose index is 1 mod 4; the rest (index
 * 3 mod 4) stays shared copy-on-write between both.  After go each process
 * checks its own view page by page (and that the other's writes did not leak
 * in); the child reports through its exit status.
 */
#include "zdtm.h"
#include <sys/mman.h>
#include <sys/wait.h>

#define NPAGES 1024
#define PG 4096

static uint64_t want(int page, int who)
{
	/* who: 0 original, 1 child's rewrite, 2 parent's rewrite */
	return zdtm_mix(page * 4 + who);
}

static void fill(unsigned char *m, int page, int who)
{
	uint64_t *w = (uint64_t *)(m + (size_t)page * PG);
	for (int i = 0; i < PG / 8; i++)
		w[i] = want(page, who) + i;
}

static int check(unsigned char *m, int me)
{
	int bad = 0;
	for (int p = 0; p < NPAGES; p++) {
		int who = 0;
		if (me == 1 && p % 2 == 0)
			who = 1;
		if (me == 2 && p % 4 == 1)
			who = 2;
		uint64_t *w = (uint64_t *)(m + (size_t)p * PG);
		for (int i = 0; i < PG / 8; i++)
			if (w[i] != want(p, who) + i) {
				bad++;
				break;
			}
	}
	return bad;
}

int main(int argc, char **argv)
{
	int st = 0, sync[2];
	unsigned char *m;

	zdtm_init(argc, argv);
	m = mmap(NULL, NPAGES * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED || pipe(sync))
		return 2;
	for (int p = 0; p < NPAGES; p++)
		fill(m, p, 0);
	pid_t child = fork();
	if (child == 0) {
		for (int p = 0; p < NPAGES; p += 2)
			fill(m, p, 1);
		(void)!write(sync[1], "r", 1);
		zdtm_wait_go();
		_exit(check(m, 1) ? 1 : 0);
	}
	for (int p = 1; p < NPAGES; p += 4)
		fill(m, p, 2);
	char c;
	if (read(sync[0], &c, 1) != 1)
		return 2;
	zdtm_ready();
	zdtm_wait_go();

	int bad = check(m, 2);
	CHECK(!bad, "%d pages of the parent differ", bad);
	CHECK(waitpid(child, &st, 0) == child, "waitpid: %m");
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the child's pages differ (status %#x)", st);
	return zdtm_finish();
}
