/*
 * incr_changes: every kind of memory change between incremental snapshots.
 *
 * The program keeps a registry of its data regions and a generation counter
 * (both in its own memory).  On each SIGUSR1 it applies the next step below,
 * then writes STATEDIR/sum-<gen>: a checksum of every registered region at
 * that moment.  The harness snapshots it after each step; a process restored
 * from any snapshot finds its generation in memory and, after go, checks that
 * its memory still sums to sum-<gen>.
 * Steps (each also rewrites ~1% of a 64 MiB area with random data):
 *   1 writes: plus read(2) from /dev/urandom into pages (kernel-mode writes)
 *   2 mmap: a new 2 MiB mapping
 *   3 munmap: a 1 MiB hole in the middle of the 64 MiB area
 *   4 mremap: the step-2 mapping moved (MREMAP_FIXED) and partly rewritten
 *   5 mprotect: a written area made read-only, a read-only one made writable
 *   6 MADV_DONTNEED: 32 pages dropped (zero), then some read, some rewritten
 *   7 thread: a new thread writes a buffer and its stack, then sleeps
 *   8 brk: the heap grows by 1 MiB (written)
 *   9 MADV_DONTNEED on pages mostly untouched since the last snapshot, then read
 */
#include "zdtm.h"
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>

#define PG 4096UL
#define BIG (64UL << 20)
#define MAXREG 64
#define NSTEPS 9

struct region {
	uint8_t *addr;
	size_t len;
};
static struct region regs[MAXREG];
static int nregs;
static int gen;
static uint64_t rng = 0x1234567;
static volatile sig_atomic_t want_step;
static uint8_t *big, *newmap, *placeholder, *ro_a, *ro_b;
static pthread_t th;
static volatile int thread_done;
static uint8_t *thread_buf;

static uint64_t next(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static void add_region(void *a, size_t len)
{
	regs[nregs].addr = a;
	regs[nregs].len = len;
	nregs++;
}

static int find_region(void *a)
{
	for (int i = 0; i < nregs; i++)
		if (regs[i].addr == a)
			return i;
	return -1;
}

static uint64_t checksum(void)
{
	uint64_t h = 1469598103934665603ULL ^ (uint64_t)gen;
	for (int i = 0; i < nregs; i++) {
		const uint64_t *w = (const uint64_t *)regs[i].addr;
		h = (h ^ (uint64_t)regs[i].addr ^ regs[i].len) * 1099511628211ULL;
		for (size_t k = 0; k < regs[i].len / 8; k++)
			h = (h ^ w[k]) * 1099511628211ULL;
	}
	return h;
}

static void fill_random(uint8_t *p, size_t len)
{
	for (size_t k = 0; k + 8 <= len; k += 8) {
		uint64_t v = next();
		memcpy(p + k, &v, 8);
	}
}

static void random_pages(uint8_t *area, size_t len, int n)
{
	for (int i = 0; i < n; i++) {
		size_t p = next() % (len / PG);
		if (area == big && p >= 32 * 256 && p < 33 * 256)
			continue; /* the step-3 hole */
		fill_random(area + p * PG, PG);
	}
}

static void *thread_fn(void *arg)
{
	volatile uint64_t local[512];
	(void)arg;
	for (int i = 0; i < 512; i++)
		local[i] = 0xabcdef00 + i;
	for (size_t k = 0; k < (256 << 10); k++)
		thread_buf[k] = (uint8_t)(k * 7 + 3);
	thread_done = 1;
	for (;;)
		zdtm_sleep_ms(1000);
	return (void *)local[0];
}

static void step(int g)
{
	switch (g) {
	case 1: {
		int fd = open("/dev/urandom", O_RDONLY);
		if (fd < 0 || read(fd, big + 100 * PG, 4 * PG) != (ssize_t)(4 * PG))
			fail("read /dev/urandom");
		close(fd);
		break;
	}
	case 2:
		newmap = mmap(NULL, 2 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		fill_random(newmap, 2 << 20);
		add_region(newmap, 2 << 20);
		break;
	case 3: {
		int i = find_region(big);
		munmap(big + (32UL << 20), 1 << 20);
		regs[i].len = 32UL << 20;
		add_region(big + (33UL << 20), BIG - (33UL << 20));
		break;
	}
	case 4: {
		int i = find_region(newmap);
		newmap = mremap(newmap, 2 << 20, 2 << 20, MREMAP_MAYMOVE | MREMAP_FIXED, placeholder);
		if (newmap == MAP_FAILED)
			fail("mremap: %s", strerror(errno));
		regs[i].addr = newmap;
		random_pages(newmap, 2 << 20, 16);
		break;
	}
	case 5:
		random_pages(ro_a, 1 << 20, 32);
		mprotect(ro_a, 1 << 20, PROT_READ);
		mprotect(ro_b, 1 << 20, PROT_READ | PROT_WRITE);
		random_pages(ro_b, 1 << 20, 32);
		break;
	case 6: {
		volatile uint8_t sink = 0;
		madvise(big + 200 * PG, 32 * PG, MADV_DONTNEED);
		for (int k = 0; k < 8; k++)
			sink += big[(200 + k) * PG];
		fill_random(big + 220 * PG, 4 * PG);
		(void)sink;
		break;
	}
	case 7:
		thread_buf = malloc(256 << 10);
		add_region(thread_buf, 256 << 10);
		pthread_create(&th, NULL, thread_fn, NULL);
		while (!thread_done)
			zdtm_sleep_ms(1);
		break;
	case 8: {
		uint8_t *h = sbrk(1 << 20);
		fill_random(h, 1 << 20);
		add_region(h, 1 << 20);
		break;
	}
	case 9: {
		/* pages 300..331: most not written since the previous snapshot */
		volatile uint8_t sink = 0;
		madvise(big + 300 * PG, 32 * PG, MADV_DONTNEED);
		for (int k = 0; k < 32; k++)
			sink += big[(300 + k) * PG];
		(void)sink;
		return; /* no random writes: they could hit the pages */
	}
	}
	random_pages(big, BIG, (int)(BIG / PG / 100));
}

static void record(void)
{
	char name[64], text[64];
	snprintf(name, sizeof(name), "sum-%d", gen);
	snprintf(text, sizeof(text), "%016llx\n", (unsigned long long)checksum());
	zdtm_write_file(name, text);
}

static void on_usr1(int sig)
{
	(void)sig;
	want_step = 1;
}

int main(int argc, char **argv)
{
	zdtm_init(argc, argv);
	big = mmap(NULL, BIG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	placeholder = mmap(NULL, 2 << 20, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ro_a = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ro_b = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (big == MAP_FAILED || placeholder == MAP_FAILED || ro_a == MAP_FAILED || ro_b == MAP_FAILED)
		return perror("mmap"), 1;
	/* half the big area data, a quarter zeros written, a quarter untouched */
	for (size_t p = 0; p < BIG / PG; p++)
		if (p % 4 < 2)
			fill_random(big + p * PG, PG);
		else if (p % 4 == 2)
			memset(big + p * PG, 0, PG);
	fill_random(ro_a, 1 << 20);
	fill_random(ro_b, 1 << 20);
	mprotect(ro_b, 1 << 20, PROT_READ);
	add_region(big, BIG);
	add_region(ro_a, 1 << 20);
	add_region(ro_b, 1 << 20);
	signal(SIGUSR1, on_usr1);
	record();
	zdtm_ready();

	while (!zdtm_go()) {
		if (want_step && gen < NSTEPS) {
			want_step = 0;
			gen++;
			step(gen);
			record();
		}
		zdtm_sleep_ms(2);
	}
	char name[64], path[PATH_MAX], want[64], got[64];
	snprintf(name, sizeof(name), "sum-%d", gen);
	if (zdtm_read(zdtm_path(name, path, sizeof(path)), want, sizeof(want)) < 0)
		fail("no %s", name);
	snprintf(got, sizeof(got), "%016llx\n", (unsigned long long)checksum());
	CHECK(strcmp(want, got) == 0, "generation %d: memory sums to %s, recorded %s", gen, got, want);
	return zdtm_finish();
}
