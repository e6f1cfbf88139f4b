/*
 * sig_altstack: alternate signal stacks (sigaltstack + SA_ONSTACK).
 *
 * The main thread and a second thread each install their own 64 KiB
 * alternate stack (malloc()ed); SIGUSR1 has an SA_ONSTACK handler.  After
 * go each thread checks sigaltstack() still reports its stack (address,
 * size, flags 0), raises SIGUSR1 at itself, and the handler must run on that
 * thread's alternate stack (address of a local inside it, and sigaltstack()
 * inside the handler reports SS_ONSTACK).
 */
#include "zdtm.h"
#include <pthread.h>
#include <signal.h>

#define ALT (64 * 1024)

static __thread volatile char *h_local;
static __thread volatile int h_flags, h_hits;
static int stop, ready_count;

static void on_usr1(int sig)
{
	volatile char here;
	stack_t cur;

	sigaltstack(NULL, &cur);
	h_flags = cur.ss_flags;
	h_local = &here;
	h_hits++;
}

static void *body(void *arg)
{
	const char *who = arg;
	char *mem = malloc(ALT);
	stack_t ss = { .ss_sp = mem, .ss_size = ALT, .ss_flags = 0 }, now;

	if (sigaltstack(&ss, NULL))
		fail("%s: sigaltstack: %m", who);
	if (__atomic_add_fetch(&ready_count, 1, __ATOMIC_SEQ_CST) == 2)
		zdtm_ready();
	while (!__atomic_load_n(&stop, __ATOMIC_SEQ_CST)) {
		zdtm_sleep_ms(2);
		if (!strcmp(who, "main") && zdtm_go())
			__atomic_store_n(&stop, 1, __ATOMIC_SEQ_CST);
	}
	memset(&now, 0, sizeof(now));
	sigaltstack(NULL, &now);
	CHECK(now.ss_sp == mem && now.ss_size == ALT && now.ss_flags == 0,
	      "%s: altstack %p/%zu/%d, expected %p/%d/0", who, now.ss_sp, now.ss_size,
	      now.ss_flags, (void *)mem, ALT);
	syscall(SYS_tgkill, getpid(), zdtm_gettid(), SIGUSR1);
	CHECK(h_hits == 1, "%s: handler ran %d times", who, h_hits);
	CHECK(h_local >= mem && h_local < mem + ALT, "%s: handler ran at %p, not on %p..%p",
	      who, (void *)h_local, (void *)mem, (void *)(mem + ALT));
	CHECK(h_flags == SS_ONSTACK, "%s: ss_flags in handler %d", who, h_flags);
	return NULL;
}

int main(int argc, char **argv)
{
	struct sigaction sa = { .sa_handler = on_usr1, .sa_flags = SA_ONSTACK };
	pthread_t t;

	zdtm_init(argc, argv);
	sigaction(SIGUSR1, &sa, NULL);
	pthread_create(&t, NULL, body, "thread");
	while (__atomic_load_n(&ready_count, __ATOMIC_SEQ_CST) < 1)
		zdtm_sleep_ms(1);
	body("main");
	pthread_join(t, NULL);
	return zdtm_finish();
}
