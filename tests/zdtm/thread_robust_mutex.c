/*
 * thread_robust_mutex: robust mutexes and the kernel robust futex list.
 *
 * A "holder" thread locks robust mutex A and keeps it across the dump; the
 * main thread locks robust mutex B.  Both record their robust list head
 * (get_robust_list).  After go: the heads are unchanged and the futex words
 * still name the owners' TIDs; another thread's trylock(B) gives EBUSY until
 * main unlocks B.  Then the holder exits without unlocking A: only the
 * kernel's robust-list walk at thread exit can mark A, so the main thread's
 * lock(A) must return EOWNERDEAD (and work after pthread_mutex_consistent).
 */
#include "zdtm.h"
#include <pthread.h>

static pthread_mutex_t A, B;
static int holder_locked, holder_exit;
static pid_t holder_tid;
static void *holder_head0, *holder_head1;

static void *robust_head(pid_t tid)
{
	void *head = NULL;
	size_t len;

	if (syscall(SYS_get_robust_list, tid, &head, &len))
		return (void *)-1;
	return head;
}

static void *holder(void *arg)
{
	holder_tid = zdtm_gettid();
	pthread_mutex_lock(&A);
	holder_head0 = robust_head(0);
	__atomic_store_n(&holder_locked, 1, __ATOMIC_SEQ_CST);
	while (!__atomic_load_n(&holder_exit, __ATOMIC_SEQ_CST))
		zdtm_sleep_ms(2);
	holder_head1 = robust_head(0);
	return NULL; /* exits holding A */
}

static void *try_b(void *arg)
{
	return (void *)(long)pthread_mutex_trylock(&B);
}

int main(int argc, char **argv)
{
	pthread_mutexattr_t at;
	pthread_t holder_t, t;
	void *main_head0, *ret;
	int r;

	zdtm_init(argc, argv);
	pthread_mutexattr_init(&at);
	pthread_mutexattr_setrobust(&at, PTHREAD_MUTEX_ROBUST);
	pthread_mutex_init(&A, &at);
	pthread_mutex_init(&B, &at);
	pthread_mutex_lock(&B);
	main_head0 = robust_head(0);
	pthread_create(&holder_t, NULL, holder, NULL);
	while (!__atomic_load_n(&holder_locked, __ATOMIC_SEQ_CST))
		zdtm_sleep_ms(1);

	zdtm_ready();
	zdtm_wait_go();

	CHECK(robust_head(0) == main_head0, "main robust list head %p, was %p", robust_head(0),
	      main_head0);
	CHECK(robust_head(holder_tid) == holder_head0, "holder robust list head %p, was %p",
	      robust_head(holder_tid), holder_head0);
	CHECK((A.__data.__lock & 0x3fffffff) == holder_tid, "futex word of A is %#x, holder %d",
	      A.__data.__lock, holder_tid);
	CHECK((B.__data.__lock & 0x3fffffff) == getpid(), "futex word of B is %#x", B.__data.__lock);

	/* B is still held by main */
	pthread_create(&t, NULL, try_b, NULL);
	pthread_join(t, &ret);
	CHECK((long)ret == EBUSY, "trylock of held mutex B gave %ld, not EBUSY", (long)ret);
	CHECK(pthread_mutex_unlock(&B) == 0, "unlock of B failed");

	/* the holder dies holding A: the kernel must mark A as owner-dead */
	__atomic_store_n(&holder_exit, 1, __ATOMIC_SEQ_CST);
	pthread_join(holder_t, NULL);
	CHECK(holder_head1 == holder_head0, "holder's own robust list head changed");
	r = pthread_mutex_lock(&A);
	CHECK(r == EOWNERDEAD, "lock of A after its owner exited gave %d, not EOWNERDEAD", r);
	if (r == EOWNERDEAD) {
		pthread_mutex_consistent(&A);
		pthread_mutex_unlock(&A);
		CHECK(pthread_mutex_lock(&A) == 0, "A unusable after pthread_mutex_consistent");
		pthread_mutex_unlock(&A);
	}
	return zdtm_finish();
}
