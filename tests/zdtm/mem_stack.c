/*
 * mem_stack: stack contents of a deep recursion.
 *
 * The main thread recurses 4000 levels deep; every frame keeps 8 values
 * derived from its depth in a local array, and one frame at depth 100 also
 * holds a 256 KiB alloca() buffer.  At the bottom the program waits for go
 * (computing a hash).  Then every frame, while unwinding, checks its locals;
 * return addresses and saved registers are implicitly checked by returning.
 */
#include "zdtm.h"
#include <alloca.h>

#define DEPTH 4000
#define BIG (256 * 1024)

static uint64_t bottom_work;

static int __attribute__((noinline)) recurse(int depth)
{
	volatile uint64_t local[8];
	volatile unsigned char *big = NULL;
	int bad = 0;

	for (int k = 0; k < 8; k++)
		local[k] = zdtm_mix((uint64_t)depth * 8 + k);
	if (depth == 100) {
		big = alloca(BIG);
		for (int i = 0; i < BIG; i++)
			big[i] = (unsigned char)zdtm_mix(i);
	}

	if (depth < DEPTH) {
		bad = recurse(depth + 1);
	} else {
		zdtm_ready();
		while (!zdtm_go()) {
			for (int i = 0; i < 10000; i++)
				bottom_work = zdtm_mix(bottom_work + i);
			zdtm_sleep_ms(2);
		}
	}

	for (int k = 0; k < 8; k++)
		if (local[k] != zdtm_mix((uint64_t)depth * 8 + k)) {
			fail("frame %d local %d corrupted", depth, k);
			bad++;
			break;
		}
	if (big)
		for (int i = 0; i < BIG; i++)
			if (big[i] != (unsigned char)zdtm_mix(i)) {
				fail("alloca buffer byte %d corrupted", i);
				bad++;
				break;
			}
	return bad;
}

int main(int argc, char **argv)
{
	int bad;

	zdtm_init(argc, argv);
	bad = recurse(0);
	CHECK(bad == 0, "%d frames corrupted", bad);
	return zdtm_finish();
}
