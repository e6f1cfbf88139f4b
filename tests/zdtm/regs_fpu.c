/*
 * regs_fpu: x87 and SSE control/state registers.
 *
 * The main thread sets MXCSR to round-toward-zero with FTZ and DAZ (0xffc0
 * control bits) and the x87 control word to round-down, 53-bit precision
 * (0x067f); a second thread sets MXCSR to round-up (0x5f80).  Each computes
 * reference results under its mode (1/3, 2/3 in float, sqrt(2) in x87, a
 * denormal product).  The main thread then waits for go inside an asm loop
 * that holds six values on the x87 register stack and adds 1.0 to st(0) per
 * round (with access()/nanosleep syscalls in between).  After go: the x87
 * stack values and round count match, the control words are unchanged in
 * both threads, and recomputed results are bit-identical to the references.
 */
#include "zdtm.h"
#include <math.h>
#include <pthread.h>

#define STR_(x) #x
#define STR(x) STR_(x)

#define MXCSR_CTRL 0xffc0 /* control bits; the low 6 are sticky flags */

struct ref {
	float third, two_thirds, tiny;
	long double sqrt2;
};

static volatile float one = 1.0f, three = 3.0f, two = 2.0f, small = 1e-20f;
static volatile long double ld_two = 2.0L;
static int stop;

static unsigned get_mxcsr(void)
{
	unsigned v;
	asm volatile("stmxcsr %0" : "=m"(v));
	return v;
}

static void set_mxcsr(unsigned v)
{
	asm volatile("ldmxcsr %0" : : "m"(v));
}

static unsigned short get_fcw(void)
{
	unsigned short v;
	asm volatile("fnstcw %0" : "=m"(v));
	return v;
}

static void set_fcw(unsigned short v)
{
	asm volatile("fldcw %0" : : "m"(v));
}

static void compute(struct ref *r)
{
	long double x = ld_two, s;

	r->third = one / three;
	r->two_thirds = two / three;
	r->tiny = small * small; /* 1e-40 is denormal: FTZ makes it 0 */
	asm volatile("fsqrt" : "=t"(s) : "0"(x));
	r->sqrt2 = s;
}

static int same(const struct ref *a, const struct ref *b)
{
	return !memcmp(&a->third, &b->third, 4) && !memcmp(&a->two_thirds, &b->two_thirds, 4) &&
	       !memcmp(&a->tiny, &b->tiny, 4) && !memcmp(&a->sqrt2, &b->sqrt2, 10);
}

static void *thread(void *arg)
{
	struct ref r0, r1;

	set_mxcsr(0x5f80); /* round up */
	compute(&r0);
	__atomic_store_n((int *)arg, 1, __ATOMIC_SEQ_CST);
	while (!__atomic_load_n(&stop, __ATOMIC_SEQ_CST))
		zdtm_sleep_ms(2);
	compute(&r1);
	if ((get_mxcsr() & MXCSR_CTRL) != 0x5f80)
		fail("thread MXCSR %#x, expected 0x5f80", get_mxcsr());
	if (!same(&r0, &r1))
		fail("thread: results under round-up changed");
	return NULL;
}

int main(int argc, char **argv)
{
	static const long double in[6] = { 1.0L, 2.5L, -3.25L, 1e300L, 1.0L / 3, 42.0L };
	long double outv[6];
	struct ref r0, r1;
	char gopath[PATH_MAX];
	struct timespec ts = { 0, 1000000 };
	unsigned long rounds = 0;
	int thread_ready = 0;
	pthread_t t;

	zdtm_init(argc, argv);
	zdtm_path("go", gopath, sizeof(gopath));
	pthread_create(&t, NULL, thread, &thread_ready);
	set_mxcsr(0x1f80 | (3 << 13) | (1 << 15) | (1 << 6)); /* RZ, FTZ, DAZ */
	set_fcw(0x067f);                                      /* round down, 53 bit */
	compute(&r0);
	CHECK(r0.tiny == 0.0f, "FTZ not effective before dump");
	while (!__atomic_load_n(&thread_ready, __ATOMIC_SEQ_CST))
		zdtm_sleep_ms(1);

	zdtm_ready();
	asm volatile(
		"fldt 80(%[in])\n\t"
		"fldt 64(%[in])\n\t"
		"fldt 48(%[in])\n\t"
		"fldt 32(%[in])\n\t"
		"fldt 16(%[in])\n\t"
		"fldt 0(%[in])\n\t" /* st(0) = in[0] */
		"1:\n\t"
		"fld1\n\t"
		"faddp\n\t" /* st(0) += 1.0 */
		"inc %[rounds]\n\t"
		"mov $" STR(SYS_access) ", %%eax\n\t"
		"mov %[path], %%rdi\n\t"
		"xor %%esi, %%esi\n\t"
		"syscall\n\t"
		"test %%rax, %%rax\n\t"
		"jz 2f\n\t"
		"mov $" STR(SYS_nanosleep) ", %%eax\n\t"
		"mov %[ts], %%rdi\n\t"
		"xor %%esi, %%esi\n\t"
		"syscall\n\t"
		"jmp 1b\n"
		"2:\n\t"
		"fstpt 0(%[out])\n\t"
		"fstpt 16(%[out])\n\t"
		"fstpt 32(%[out])\n\t"
		"fstpt 48(%[out])\n\t"
		"fstpt 64(%[out])\n\t"
		"fstpt 80(%[out])\n\t"
		: [rounds] "+r"(rounds)
		: [in] "r"(in), [out] "r"(outv), [path] "r"(gopath), [ts] "r"(&ts)
		: "rax", "rcx", "rdi", "rsi", "r11", "memory", "cc", "st", "st(1)", "st(2)",
		  "st(3)", "st(4)", "st(5)", "st(6)", "st(7)");

	CHECK(rounds > 0, "no rounds");
	CHECK(outv[0] == in[0] + (long double)rounds, "x87 st(0) = %Lg, expected %Lg",
	      outv[0], in[0] + (long double)rounds);
	for (int i = 1; i < 6; i++)
		CHECK(!memcmp(&outv[i], &in[i], 10), "x87 st(%d) = %Lg, expected %Lg", i,
		      outv[i], in[i]);
	CHECK((get_mxcsr() & MXCSR_CTRL) == 0xffc0, "MXCSR %#x, expected 0xffc0 control bits",
	      get_mxcsr());
	CHECK(get_fcw() == 0x067f, "x87 control word %#x, expected 0x067f", get_fcw());
	compute(&r1);
	CHECK(same(&r0, &r1), "results under RZ/FTZ/round-down changed");
	__atomic_store_n(&stop, 1, __ATOMIC_SEQ_CST);
	pthread_join(t, NULL);
	return zdtm_finish();
}
