/*
 * tree_shared_anon: MAP_SHARED|MAP_ANONYMOUS memory inherited across fork.
 *
 * 64 KiB of shared anonymous memory is mapped before fork.  Before ready the
 * parent fills the first half with a pattern and the child the second half;
 * each checks the other's half.  After go the child writes a token into the
 * memory and the parent must see it (and vice versa): both processes still
 * map one object.  The child reports through its exit status.
 */
#include "zdtm.h"
#include <sys/mman.h>
#include <sys/wait.h>

#define SIZE (64 * 1024)

static int check_half(volatile unsigned char *m, int half, unsigned seed)
{
	for (int i = 0; i < SIZE / 2; i++)
		if (m[half * SIZE / 2 + i] != (unsigned char)(zdtm_mix(seed + i) & 0xff))
			return 0;
	return 1;
}

int main(int argc, char **argv)
{
	volatile unsigned char *m;
	volatile int *flag;
	int st = 0;

	zdtm_init(argc, argv);
	m = mmap(NULL, SIZE + 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		return 2;
	flag = (volatile int *)(m + SIZE);
	pid_t child = fork();
	if (child == 0) {
		for (int i = 0; i < SIZE / 2; i++)
			m[SIZE / 2 + i] = zdtm_mix(2000 + i) & 0xff;
		__atomic_store_n(&flag[0], 1, __ATOMIC_SEQ_CST);
		while (__atomic_load_n(&flag[1], __ATOMIC_SEQ_CST) != 1)
			zdtm_sleep_ms(1);
		int bad = !check_half(m, 0, 1000);
		/* after go (signalled by the parent through the memory): reply */
		while (__atomic_load_n(&flag[2], __ATOMIC_SEQ_CST) != 0x600d)
			zdtm_sleep_ms(1);
		__atomic_store_n(&flag[3], 0xbeef, __ATOMIC_SEQ_CST);
		bad |= !check_half(m, 1, 2000) << 1;
		_exit(bad);
	}
	for (int i = 0; i < SIZE / 2; i++)
		m[i] = zdtm_mix(1000 + i) & 0xff;
	__atomic_store_n(&flag[1], 1, __ATOMIC_SEQ_CST);
	while (__atomic_load_n(&flag[0], __ATOMIC_SEQ_CST) != 1)
		zdtm_sleep_ms(1);
	CHECK(check_half(m, 1, 2000), "child's half differs before dump");
	zdtm_ready();
	zdtm_wait_go();

	CHECK(check_half(m, 0, 1000), "parent's half differs");
	CHECK(check_half(m, 1, 2000), "child's half differs");
	__atomic_store_n(&flag[2], 0x600d, __ATOMIC_SEQ_CST);
	for (int i = 0; i < 2000 && __atomic_load_n(&flag[3], __ATOMIC_SEQ_CST) != 0xbeef; i++)
		zdtm_sleep_ms(1);
	CHECK(flag[3] == 0xbeef, "the child's write is not visible: the memory is no longer shared");
	CHECK(waitpid(child, &st, 0) == child, "waitpid: %m");
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child reported %#x (1: parent's half, 2: own half)", st);
	return zdtm_finish();
}
