/*
 * tree_fifo: a named pipe (FIFO) between parent and child, bytes queued.
 *
 * STATEDIR/fifo is created with mkfifo; the parent opens it for reading,
 * the child for writing and writes 5000 bytes before ready.  After go the
 * child writes 500 more and exits; the parent reads 5500 bytes, checks them,
 * then EOF.  The restored descriptors must still be the FIFO at that path.
 */
#include "zdtm.h"
#include <sys/stat.h>
#include <sys/ioctl.h>
#include <sys/wait.h>

int main(int argc, char **argv)
{
	char path[PATH_MAX], link[PATH_MAX], proc[64];
	static unsigned char want[5500], got[6000];
	int st = 0, rfd;
	struct stat sb;

	zdtm_init(argc, argv);
	zdtm_path("fifo", path, sizeof(path));
	unlink(path);
	if (mkfifo(path, 0600))
		return 2;
	for (int i = 0; i < 5500; i++)
		want[i] = zdtm_mix(7 + i) & 0xff;
	pid_t child = fork();
	if (child == 0) {
		int wfd = open(path, O_WRONLY);
		if (wfd < 0 || write(wfd, want, 5000) != 5000)
			_exit(3);
		zdtm_wait_go();
		_exit(write(wfd, want + 5000, 500) != 500);
	}
	rfd = open(path, O_RDONLY);
	if (rfd < 0)
		return 2;
	int queued = 0;
	while (queued < 5000) {
		if (ioctl(rfd, FIONREAD, &queued) < 0 && errno != EINTR)
			return 2;
		if (queued < 5000)
			zdtm_sleep_ms(1);
	}
	zdtm_ready();
	zdtm_wait_go();

	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", rfd);
	ssize_t l = readlink(proc, link, sizeof(link) - 1);
	link[l > 0 ? l : 0] = 0;
	CHECK(!strcmp(link, path), "fd is %s, want %s", link, path);
	CHECK(fstat(rfd, &sb) == 0 && S_ISFIFO(sb.st_mode), "fd is not a FIFO");
	int n = 0;
	for (;;) {
		ssize_t r = read(rfd, got + n, sizeof(got) - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		n += r;
	}
	CHECK(n == 5500 && !memcmp(got, want, 5500), "read %d bytes (want 5500) or they differ", n);
	CHECK(waitpid(child, &st, 0) == child, "waitpid: %m");
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child reported %#x", st);
	unlink(path);
	return zdtm_finish();
}
