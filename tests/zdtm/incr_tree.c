/*
 * incr_tree: a parent and its child, tracked per process, write random pages.
 *
 * The parent fills a 16 MiB area and forks: both share it copy-on-write.
 * On each SIGUSR1 (sent to the parent, which passes it on) each process
 * writes a random number of random pages of its copy, single bytes some of
 * them; at generation 2 the child maps a new area and fills part of it, at
 * generation 3 the parent munmaps part of its copy.  Each records the
 * checksum of its memory in STATEDIR/psum-<gen> / csum-<gen>; the parent
 * writes sum-<gen> once both are there.  After go, each checks that its
 * memory still sums to what it recorded at its generation; the child exits
 * with the verdict, which the parent collects with waitpid.
 */
#include "zdtm.h"
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>

#define PG 4096UL
#define AREA (16UL << 20)
#define EXTRA (4UL << 20)

static uint8_t *area, *extra;
static size_t area_len = AREA;
static int gen;
static uint64_t rng;
static volatile sig_atomic_t want_step;
static pid_t child;

static uint64_t next(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static uint64_t checksum(void)
{
	uint64_t h = 1469598103934665603ULL ^ (uint64_t)gen;
	for (size_t k = 0; k < area_len / 8; k++)
		h = (h ^ ((const uint64_t *)area)[k]) * 1099511628211ULL;
	if (extra)
		for (size_t k = 0; k < EXTRA / 8; k++)
			h = (h ^ ((const uint64_t *)extra)[k]) * 1099511628211ULL;
	return h;
}

static void record(const char *prefix)
{
	char name[64], text[64];
	snprintf(name, sizeof(name), "%s-%d", prefix, gen);
	snprintf(text, sizeof(text), "%016llx\n", (unsigned long long)checksum());
	zdtm_write_file(name, text);
}

static void scribble(void)
{
	int n = (int)(next() % 1500);
	for (int i = 0; i < n; i++) {
		size_t p = next() % (area_len / PG);
		if (i % 4 == 0) {
			area[p * PG + next() % PG] ^= 0xa5;
		} else {
			for (size_t k = 0; k < PG; k += 8) {
				uint64_t v = next();
				memcpy(area + p * PG + k, &v, 8);
			}
		}
	}
}

static void on_usr1(int sig)
{
	(void)sig;
	want_step = 1;
}

static int exists(const char *name)
{
	char p[PATH_MAX];
	return faccessat(zdtm_at(), zdtm_name(name, p, sizeof(p)), F_OK, 0) == 0;
}

static int verify(const char *prefix)
{
	char name[64], path[PATH_MAX], want[64], got[64];
	snprintf(name, sizeof(name), "%s-%d", prefix, gen);
	if (zdtm_read(zdtm_path(name, path, sizeof(path)), want, sizeof(want)) < 0) {
		fail("%s: no %s", prefix, name);
		return 0;
	}
	snprintf(got, sizeof(got), "%016llx\n", (unsigned long long)checksum());
	CHECK(strcmp(want, got) == 0, "%s generation %d: memory sums to %s, recorded %s", prefix, gen, got, want);
	return strcmp(want, got) == 0;
}

static void child_main(void)
{
	rng ^= 0xdeadbeefcafef00dULL;
	record("csum");
	for (;;) {
		if (zdtm_go())
			_exit(verify("csum") ? 0 : 1);
		if (want_step) {
			want_step = 0;
			gen++;
			if (gen == 2) {
				extra = mmap(NULL, EXTRA, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
				if (extra == MAP_FAILED)
					_exit(3);
				for (size_t p = 0; p < EXTRA / PG; p += 3)
					memset(extra + p * PG, (int)(p * 7 + 1), PG);
			}
			scribble();
			record("csum");
		}
		zdtm_sleep_ms(2);
	}
}

int main(int argc, char **argv)
{
	zdtm_init(argc, argv);
	rng = (uint64_t)time(NULL) * 2654435761ULL | 1;
	area = mmap(NULL, AREA, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (area == MAP_FAILED)
		return perror("mmap"), 1;
	for (size_t p = 0; p < AREA / PG; p += 2)
		memset(area + p * PG, (int)(p & 0xff) | 1, PG);
	signal(SIGUSR1, on_usr1);
	child = fork();
	if (child < 0)
		return perror("fork"), 1;
	if (child == 0)
		child_main();
	record("psum");
	while (!exists("csum-0"))
		zdtm_sleep_ms(2);
	zdtm_ready();

	while (!zdtm_go()) {
		if (want_step) {
			want_step = 0;
			gen++;
			kill(child, SIGUSR1);
			if (gen == 3) {
				munmap(area + AREA / 2, AREA / 4);
				memset(area + AREA / 2 - PG, 0x3c, PG);
				area_len = AREA / 2; /* the checksum covers what is left below the hole */
			}
			scribble();
			record("psum");
			char cname[64];
			snprintf(cname, sizeof(cname), "csum-%d", gen);
			while (!exists(cname))
				zdtm_sleep_ms(1);
			zdtm_write_file((snprintf(cname, sizeof(cname), "sum-%d", gen), cname), "ok\n");
		}
		zdtm_sleep_ms(2);
	}
	verify("psum");
	int st = 0;
	CHECK(waitpid(child, &st, 0) == child, "waitpid(child %d): %s", (int)child, strerror(errno));
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the child's check failed (status %#x)", st);
	return zdtm_finish();
}
