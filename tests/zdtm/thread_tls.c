/*
 * thread_tls: __thread variables and the fs base of every thread.
 *
 * The main thread and 3 threads each fill their own __thread buffer with an
 * index-specific pattern, record the address of their TLS counter, the fs
 * base (arch_prctl ARCH_GET_FS) and pthread_self(), and then keep
 * incrementing the TLS counter (and a stack copy of it) until stopped.
 * After go every thread checks: fs base, pthread_self() (== fs base on
 * x86-64 glibc) and &tls_counter unchanged, the TLS buffer intact, the
 * statically initialised __thread variable intact, and tls_counter equal to
 * its own count.
 */
#include "zdtm.h"
#include <asm/prctl.h>
#include <pthread.h>

#define NTHR 3

static __thread uint64_t tls_counter;
static __thread char tls_buf[256];
static __thread int tls_init = 4242;

static int stop, ready_count;

static unsigned long get_fs(void)
{
	unsigned long fs = 0;
	syscall(SYS_arch_prctl, ARCH_GET_FS, &fs);
	return fs;
}

static void *body(void *arg)
{
	long idx = (long)arg;
	unsigned long fs0 = get_fs();
	pthread_t self0 = pthread_self();
	uint64_t *addr0 = &tls_counter, count = 0;

	for (int i = 0; i < 256; i++)
		tls_buf[i] = (char)(i * 13 + idx);
	tls_init += (int)idx;
	if (fs0 != (unsigned long)self0)
		fail("thread %ld: fs base %#lx != pthread_self %#lx", idx, fs0, (unsigned long)self0);
	/* the main thread (index 0) is the last one: it declares readiness */
	if (__atomic_add_fetch(&ready_count, 1, __ATOMIC_SEQ_CST) == NTHR + 1)
		zdtm_ready();

	while (!__atomic_load_n(&stop, __ATOMIC_SEQ_CST)) {
		for (int i = 0; i < 1000; i++) {
			tls_counter++;
			count++;
		}
		zdtm_sleep_ms(1);
		if (idx == 0 && zdtm_go())
			__atomic_store_n(&stop, 1, __ATOMIC_SEQ_CST);
	}

	if (get_fs() != fs0)
		fail("thread %ld: fs base %#lx, was %#lx", idx, get_fs(), fs0);
	if (!pthread_equal(pthread_self(), self0))
		fail("thread %ld: pthread_self changed", idx);
	if (&tls_counter != addr0)
		fail("thread %ld: &tls_counter %p, was %p", idx, (void *)&tls_counter, (void *)addr0);
	if (tls_counter != count)
		fail("thread %ld: tls_counter %lu, expected %lu", idx, tls_counter, count);
	if (tls_init != 4242 + idx)
		fail("thread %ld: tls_init %d", idx, tls_init);
	for (int i = 0; i < 256; i++)
		if (tls_buf[i] != (char)(i * 13 + idx)) {
			fail("thread %ld: tls_buf[%d] corrupted", idx, i);
			break;
		}
	return NULL;
}

int main(int argc, char **argv)
{
	pthread_t t[NTHR];

	zdtm_init(argc, argv);
	for (long i = 0; i < NTHR; i++)
		pthread_create(&t[i], NULL, body, (void *)(i + 1));
	while (__atomic_load_n(&ready_count, __ATOMIC_SEQ_CST) < NTHR)
		zdtm_sleep_ms(1);
	body((void *)0); /* main thread is index 0 and polls for go */ /* main thread is index 0 and polls for go */
	for (int i = 0; i < NTHR; i++)
		pthread_join(t[i], NULL);
	return zdtm_finish();
}
