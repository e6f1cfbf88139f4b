/*
 * incr_random: random writes under a dirty-page tracker; a missed write shows.
 *
 * On each SIGUSR1 the program writes a random number (0..3000) of random
 * pages of a 32 MiB area with random data: from the main thread with plain
 * stores, from a second thread, and through read(2) from /dev/urandom
 * (kernel-mode writes); some single bytes only.  Then it writes
 * STATEDIR/sum-<gen> with the checksum of the area.  A process restored from
 * any snapshot checks, after go, that its area still sums to sum-<gen>.
 */
#include "zdtm.h"
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>

#define PG 4096UL
#define AREA (32UL << 20)

static uint8_t *area;
static int gen;
static uint64_t rng;
static volatile sig_atomic_t want_step;
static volatile int thread_req, thread_ack;

static uint64_t next(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static uint64_t checksum(void)
{
	uint64_t h = 1469598103934665603ULL ^ (uint64_t)gen;
	const uint64_t *w = (const uint64_t *)area;
	for (size_t k = 0; k < AREA / 8; k++)
		h = (h ^ w[k]) * 1099511628211ULL;
	return h;
}

static void *writer(void *arg)
{
	uint64_t s = 0x9e3779b97f4a7c15ULL;
	(void)arg;
	for (;;) {
		while (__atomic_load_n(&thread_req, __ATOMIC_ACQUIRE) == thread_ack)
			zdtm_sleep_ms(1);
		int n = (int)(next(&s) % 500);
		for (int i = 0; i < n; i++) {
			size_t p = next(&s) % (AREA / PG);
			area[p * PG + next(&s) % PG] = (uint8_t)next(&s);
		}
		__atomic_store_n(&thread_ack, thread_req, __ATOMIC_RELEASE);
	}
	return NULL;
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
	pthread_t th;
	int ufd;

	zdtm_init(argc, argv);
	rng = (uint64_t)time(NULL) * 2654435761ULL | 1;
	area = mmap(NULL, AREA, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ufd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
	if (area == MAP_FAILED || ufd < 0)
		return perror("setup"), 1;
	for (size_t p = 0; p < AREA / PG; p += 2)
		memset(area + p * PG, (int)(p & 0xff), PG);
	pthread_create(&th, NULL, writer, NULL);
	signal(SIGUSR1, on_usr1);
	record();
	zdtm_ready();

	while (!zdtm_go()) {
		if (want_step) {
			want_step = 0;
			gen++;
			int n = (int)(next(&rng) % 3000);
			for (int i = 0; i < n; i++) {
				size_t p = next(&rng) % (AREA / PG);
				if (i % 3 == 0) {
					area[p * PG + next(&rng) % PG] ^= 0x5a; /* one byte */
				} else {
					for (size_t k = 0; k < PG; k += 8) {
						uint64_t v = next(&rng);
						memcpy(area + p * PG + k, &v, 8);
					}
				}
			}
			for (int i = 0; i < 8; i++) {
				size_t p = next(&rng) % (AREA / PG - 4);
				if (pread(ufd, area + p * PG, 3 * PG, 0) != (ssize_t)(3 * PG))
					fail("read urandom: %s", strerror(errno));
			}
			__atomic_add_fetch(&thread_req, 1, __ATOMIC_RELEASE);
			while (__atomic_load_n(&thread_ack, __ATOMIC_ACQUIRE) != thread_req)
				zdtm_sleep_ms(1);
			record();
		}
		zdtm_sleep_ms(2);
	}
	char name[64], path[PATH_MAX], want[64], got[64];
	snprintf(name, sizeof(name), "sum-%d", gen);
	if (zdtm_read(zdtm_path(name, path, sizeof(path)), want, sizeof(want)) < 0)
		fail("no %s", name);
	snprintf(got, sizeof(got), "%016llx\n", (unsigned long long)checksum());
	CHECK(strcmp(want, got) == 0, "generation %d: area sums to %s, recorded %s", gen, got, want);
	return zdtm_finish();
}
