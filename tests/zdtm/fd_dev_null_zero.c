/*
 * fd_dev_null_zero: character devices /dev/null, /dev/zero, /dev/urandom.
 *
 * Opens /dev/null O_RDWR at fd 40, /dev/zero O_RDONLY at fd 41 and
 * /dev/urandom O_RDONLY at fd 42 (stdin is /dev/null from the harness too).
 * After go: fstat() shows the same character devices (1:3, 1:5, 1:9), the
 * access modes are unchanged, /dev/null reads EOF and swallows writes,
 * /dev/zero reads zeros, /dev/urandom reads random bytes.
 */
#include "zdtm.h"
#include <sys/sysmacros.h>

int main(int argc, char **argv)
{
	const char *dev[3] = { "/dev/null", "/dev/zero", "/dev/urandom" };
	int fds[3] = { 40, 41, 42 }, modes[3] = { O_RDWR, O_RDONLY, O_RDONLY };
	unsigned minor_[3] = { 3, 5, 9 };
	unsigned char buf[4096];
	struct stat st;

	zdtm_init(argc, argv);
	for (int i = 0; i < 3; i++) {
		int fd = open(dev[i], modes[i]);
		if (fd < 0 || dup2(fd, fds[i]) != fds[i])
			return perror(dev[i]), 1;
		close(fd);
	}

	zdtm_ready();
	zdtm_wait_go();

	for (int i = 0; i < 3; i++) {
		CHECK(fstat(fds[i], &st) == 0 && S_ISCHR(st.st_mode) && major(st.st_rdev) == 1 &&
		      minor(st.st_rdev) == minor_[i], "fd %d is not %s", fds[i], dev[i]);
		CHECK((fcntl(fds[i], F_GETFL) & O_ACCMODE) == modes[i], "fd %d access mode %#o",
		      fds[i], fcntl(fds[i], F_GETFL) & O_ACCMODE);
	}
	CHECK(fstat(0, &st) == 0 && S_ISCHR(st.st_mode) && minor(st.st_rdev) == 3,
	      "stdin is not /dev/null");
	CHECK(read(40, buf, sizeof(buf)) == 0, "/dev/null read not EOF");
	CHECK(write(40, buf, sizeof(buf)) == sizeof(buf), "/dev/null write failed");
	memset(buf, 0xff, sizeof(buf));
	CHECK(read(41, buf, sizeof(buf)) == sizeof(buf), "/dev/zero read failed");
	int nz = 0;
	for (size_t i = 0; i < sizeof(buf); i++)
		nz += buf[i] != 0;
	CHECK(nz == 0, "/dev/zero gave %d non-zero bytes", nz);
	CHECK(read(42, buf, 64) == 64, "/dev/urandom read failed");
	nz = 0;
	for (int i = 0; i < 64; i++)
		nz += buf[i] != 0;
	CHECK(nz > 32, "/dev/urandom looks wrong");
	return zdtm_finish();
}
