/*
 * proc_umask: the file mode creation mask.
 *
 * Sets umask(027).  After go: the Umask line of /proc/self/status is 0027,
 * umask() returns 027, and a file created with mode 0666 gets 0640.
 */
#include "zdtm.h"

int main(int argc, char **argv)
{
	char val[32], path[PATH_MAX];
	struct stat st;
	mode_t old;
	int fd;

	zdtm_init(argc, argv);
	umask(027);

	zdtm_ready();
	zdtm_wait_go();

	CHECK(zdtm_status_field("/proc/self/status", "Umask:", val, sizeof(val)) == 0 &&
	      !strcmp(val, "0027"), "Umask in /proc/self/status is %s", val);
	old = umask(027);
	CHECK(old == 027, "umask was %03o", old);
	zdtm_path("umask-file", path, sizeof(path));
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0666);
	CHECK(fd >= 0 && fstat(fd, &st) == 0 && (st.st_mode & 07777) == 0640,
	      "new file mode %03o, expected 640", st.st_mode & 07777);
	close(fd);
	return zdtm_finish();
}
