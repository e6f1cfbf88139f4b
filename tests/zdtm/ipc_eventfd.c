/*
 * ipc_eventfd: eventfd counters and flags.
 *
 * a: plain eventfd, counter 5 (initval) + 37 written = 42;
 * b: EFD_SEMAPHORE|EFD_NONBLOCK with counter 3;
 * c: O_NONBLOCK eventfd holding a counter above 2^32 (no 32-bit initval).
 * After go: F_GETFL keeps O_NONBLOCK where set; "a" reads 42 at once and is
 * then empty; "b" reads 1 three times then EAGAIN (semaphore semantics);
 * "c" reads its 64-bit value.
 */
#include "zdtm.h"
#include <sys/eventfd.h>

int main(int argc, char **argv)
{
	uint64_t v, big = (1ULL << 40) + 7;
	int a, b, c;

	zdtm_init(argc, argv);
	a = eventfd(5, 0);
	b = eventfd(3, EFD_SEMAPHORE | EFD_NONBLOCK);
	c = eventfd(0, EFD_NONBLOCK);
	v = 37;
	if (a < 0 || b < 0 || c < 0 || write(a, &v, 8) != 8 || write(c, &big, 8) != 8)
		return perror("eventfd"), 1;

	zdtm_ready();
	zdtm_wait_go();

	CHECK(!(fcntl(a, F_GETFL) & O_NONBLOCK), "a became non-blocking");
	CHECK(fcntl(b, F_GETFL) & O_NONBLOCK, "b lost O_NONBLOCK");
	CHECK(read(a, &v, 8) == 8 && v == 42, "a read %llu, want 42", (unsigned long long)v);
	fcntl(a, F_SETFL, O_NONBLOCK);
	CHECK(read(a, &v, 8) == -1 && errno == EAGAIN, "a not empty after reading");
	for (int i = 0; i < 3; i++)
		CHECK(read(b, &v, 8) == 8 && v == 1, "semaphore read %d gave %llu", i, (unsigned long long)v);
	CHECK(read(b, &v, 8) == -1 && errno == EAGAIN, "semaphore not empty after 3 reads");
	CHECK(read(c, &v, 8) == 8 && v == big, "c read %llu, want %llu", (unsigned long long)v,
	      (unsigned long long)big);
	return zdtm_finish();
}
