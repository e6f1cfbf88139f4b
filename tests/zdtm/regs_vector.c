/*
 * regs_vector: live AVX-512 (or AVX2) vector registers.
 *
 * One inline-asm loop loads all vector registers (zmm0-31 and mask registers
 * k1-k7 with -mavx512f; ymm0-15 with -mavx2; else xmm0-15) with distinct
 * values, then
 * repeats: 20000 rounds of reg[i] += reg[last] (64-bit lanes), then the raw
 * access(STATEDIR/go) syscall and a 1 ms nanosleep, until go exists.  The
 * dump can thus hit it computing or in a syscall.  Afterwards all registers
 * are stored and each lane must equal init[i] + rounds * init[last]; the
 * round counter itself lives in a general-purpose register.
 * The harness compiles it with -mavx512f if the CPU has avx512f.
 */
#include "zdtm.h"

#define STR_(x) #x
#define STR(x) STR_(x)

#ifdef __AVX512F__
#define NREG 32
#define LANES 8
#define R(n) "%%zmm" STR(n)
#define MOV "vmovdqu64 "
#elif defined(__AVX2__)
#define NREG 16
#define LANES 4
#define R(n) "%%ymm" STR(n)
#define MOV "vmovdqu "
#else /* plain SSE2, always there on x86-64 */
#define NREG 16
#define LANES 2
#define R(n) "%%xmm" STR(n)
#define MOV "movdqu "
#endif

#define INNER 20000
static uint64_t init[NREG][LANES] __attribute__((aligned(64)));
static uint64_t out[NREG][LANES] __attribute__((aligned(64)));
static uint16_t kin[8], kout[8];

/* load/store of register n at byte offset n*LANES*8 */
#define LD(n) MOV STR(n) "*" STR(LANES) "*8(%[in]), " R(n) "\n\t"
#define ST(n) MOV R(n) ", " STR(n) "*" STR(LANES) "*8(%[out])\n\t"
#if defined(__AVX2__) || defined(__AVX512F__)
#define ADD(n) "vpaddq " R(LAST) ", " R(n) ", " R(n) "\n\t"
#else
#define ADD(n) "paddq " R(LAST) ", " R(n) "\n\t"
#endif

#define ALL15(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) \
	X(11) X(12) X(13) X(14)
#ifdef __AVX512F__
#define LAST 31
#define ALLBUTLAST(X) ALL15(X) X(15) X(16) X(17) X(18) X(19) X(20) X(21) X(22) \
	X(23) X(24) X(25) X(26) X(27) X(28) X(29) X(30)
#define KLD "kmovw 2(%[kin]), %%k1\n\tkmovw 4(%[kin]), %%k2\n\t" \
	"kmovw 6(%[kin]), %%k3\n\tkmovw 8(%[kin]), %%k4\n\t" \
	"kmovw 10(%[kin]), %%k5\n\tkmovw 12(%[kin]), %%k6\n\tkmovw 14(%[kin]), %%k7\n\t"
#define KST "kmovw %%k1, 2(%[kout])\n\tkmovw %%k2, 4(%[kout])\n\t" \
	"kmovw %%k3, 6(%[kout])\n\tkmovw %%k4, 8(%[kout])\n\t" \
	"kmovw %%k5, 10(%[kout])\n\tkmovw %%k6, 12(%[kout])\n\tkmovw %%k7, 14(%[kout])\n\t"
#define CLOBBERS "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", \
	"xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", \
	"xmm16", "xmm17", "xmm18", "xmm19", "xmm20", "xmm21", "xmm22", "xmm23", \
	"xmm24", "xmm25", "xmm26", "xmm27", "xmm28", "xmm29", "xmm30", "xmm31", \
	"k1", "k2", "k3", "k4", "k5", "k6", "k7"
#else
#define LAST 15
#define ALLBUTLAST(X) ALL15(X)
#define KLD ""
#define KST ""
#define CLOBBERS "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", \
	"xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15"
#endif

int main(int argc, char **argv)
{
	char gopath[PATH_MAX];
	struct timespec ts = { 0, 1000000 };
	uint64_t rounds = 0;

	zdtm_init(argc, argv);
	zdtm_path("go", gopath, sizeof(gopath));
	for (int r = 0; r < NREG; r++)
		for (int l = 0; l < LANES; l++)
			init[r][l] = zdtm_mix(r * LANES + l);
	for (int k = 0; k < 8; k++)
		kin[k] = (uint16_t)zdtm_mix(1000 + k);
	fprintf(stderr, "using %d registers of %d bits\n", NREG, LANES * 64);

	zdtm_ready();
	asm volatile(
		ALLBUTLAST(LD) LD(LAST)
		KLD
		"1:\n\t"
		"mov $" STR(INNER) ", %%r8d\n\t"
		"2:\n\t"
		ALLBUTLAST(ADD)
		"dec %%r8d\n\t"
		"jnz 2b\n\t"
		"add $" STR(INNER) ", %[rounds]\n\t"
		"mov $" STR(SYS_access) ", %%eax\n\t"
		"mov %[path], %%rdi\n\t"
		"xor %%esi, %%esi\n\t"
		"syscall\n\t"
		"test %%rax, %%rax\n\t"
		"jz 3f\n\t"
		"mov $" STR(SYS_nanosleep) ", %%eax\n\t"
		"mov %[ts], %%rdi\n\t"
		"xor %%esi, %%esi\n\t"
		"syscall\n\t"
		"jmp 1b\n"
		"3:\n\t"
		ALLBUTLAST(ST) ST(LAST)
		KST
		: [rounds] "+r"(rounds)
		: [in] "r"(init), [out] "r"(out), [path] "r"(gopath), [ts] "r"(&ts),
		  [kin] "r"(kin), [kout] "r"(kout)
		: "rax", "rcx", "rdi", "rsi", "r8", "r11", "memory", "cc", CLOBBERS);

	CHECK(rounds > 0, "no rounds computed");
	for (int r = 0; r < NREG; r++)
		for (int l = 0; l < LANES; l++) {
			uint64_t want = r == LAST ? init[r][l] : init[r][l] + rounds * init[LAST][l];
			if (out[r][l] != want) {
				fail("register %d lane %d: %#lx, expected %#lx (rounds %lu)", r, l,
				     out[r][l], want, rounds);
				r = NREG;
				break;
			}
		}
#ifdef __AVX512F__
	for (int k = 1; k < 8; k++)
		CHECK(kout[k] == kin[k], "mask register k%d: %#x, expected %#x", k, kout[k], kin[k]);
#endif
	return zdtm_finish();
}
