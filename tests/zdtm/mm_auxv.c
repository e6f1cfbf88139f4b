/*
 * mm_auxv: the auxiliary vector.
 *
 * Records getauxval(AT_PAGESZ) (must equal sysconf), the 16 AT_RANDOM bytes
 * (they live on the initial stack) and the whole /proc/self/auxv (the
 * kernel's saved copy).  After go: AT_PAGESZ and the AT_RANDOM pointer and
 * bytes are unchanged, and every /proc/self/auxv entry is unchanged, except
 * AT_SYSINFO_EHDR (the vDSO address), which only has to be present.
 */
#include "zdtm.h"
#include <elf.h>
#include <sys/auxv.h>

static int read_auxv(Elf64_auxv_t *v, int max)
{
	char buf[4096];
	ssize_t n = zdtm_read("/proc/self/auxv", buf, sizeof(buf));
	int cnt = n > 0 ? (int)(n / sizeof(Elf64_auxv_t)) : 0;

	if (cnt > max)
		cnt = max;
	memcpy(v, buf, cnt * sizeof(*v));
	return cnt;
}

int main(int argc, char **argv)
{
	Elf64_auxv_t a0[128], a1[128];
	unsigned char rnd0[16];
	unsigned long pgsz0 = getauxval(AT_PAGESZ), rndp0 = getauxval(AT_RANDOM);
	int n0, n1;

	zdtm_init(argc, argv);
	if (pgsz0 != (unsigned long)sysconf(_SC_PAGESIZE) || !rndp0)
		fail("AT_PAGESZ %lu / AT_RANDOM %#lx odd before dump", pgsz0, rndp0);
	memcpy(rnd0, (void *)rndp0, 16);
	n0 = read_auxv(a0, 128);

	zdtm_ready();
	zdtm_wait_go();

	CHECK(getauxval(AT_PAGESZ) == pgsz0, "AT_PAGESZ %lu != %lu", getauxval(AT_PAGESZ), pgsz0);
	CHECK(getauxval(AT_RANDOM) == rndp0, "AT_RANDOM pointer changed");
	CHECK(!memcmp((void *)getauxval(AT_RANDOM), rnd0, 16), "AT_RANDOM bytes changed");
	n1 = read_auxv(a1, 128);
	CHECK(n1 == n0, "/proc/self/auxv has %d entries, had %d", n1, n0);
	for (int i = 0; i < n0 && i < n1; i++) {
		if (a0[i].a_type != a1[i].a_type) {
			fail("/proc/self/auxv entry %d type %lu, was %lu", i, a1[i].a_type, a0[i].a_type);
			break;
		}
		if (a0[i].a_type == AT_SYSINFO_EHDR) {
			CHECK(a1[i].a_un.a_val != 0, "AT_SYSINFO_EHDR is 0");
			continue;
		}
		CHECK(a0[i].a_un.a_val == a1[i].a_un.a_val,
		      "/proc/self/auxv type %lu: %#lx, was %#lx", a0[i].a_type,
		      a1[i].a_un.a_val, a0[i].a_un.a_val);
	}
	return zdtm_finish();
}
