/*
 * proc_cwd: current working directory.
 *
 * Creates STATEDIR/sub/dir with spaces, chdir()s into it and creates a file
 * "marker" there using a relative path.  After go: getcwd() and
 * readlink(/proc/self/cwd) give the same directory, the relative path
 * "marker" opens the same file (same inode, same content), "../.." is
 * STATEDIR, and the root directory is still "/".
 */
#include "zdtm.h"

int main(int argc, char **argv)
{
	char dir[PATH_MAX], cwd[PATH_MAX], link[PATH_MAX], buf[64];
	struct stat st0, st1, sd;
	ssize_t n;
	int fd;

	zdtm_init(argc, argv);
	zdtm_path("sub", dir, sizeof(dir));
	mkdir(dir, 0755);
	zdtm_path("sub/dir with spaces", dir, sizeof(dir));
	mkdir(dir, 0755);
	if (chdir(dir))
		return perror("chdir"), 1;
	fd = open("marker", O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || write(fd, "cwd-marker\n", 11) != 11)
		return perror("marker"), 1;
	close(fd);
	stat("marker", &st0);

	zdtm_ready();
	zdtm_wait_go();

	CHECK(getcwd(cwd, sizeof(cwd)) && !strcmp(cwd, dir), "getcwd '%s', expected '%s'", cwd, dir);
	n = readlink("/proc/self/cwd", link, sizeof(link) - 1);
	link[n > 0 ? n : 0] = 0;
	CHECK(!strcmp(link, dir), "/proc/self/cwd -> '%s'", link);
	n = zdtm_read("marker", buf, sizeof(buf));
	CHECK(n == 11 && !strcmp(buf, "cwd-marker\n"), "relative 'marker' unreadable");
	CHECK(stat("marker", &st1) == 0 && st1.st_ino == st0.st_ino && st1.st_dev == st0.st_dev,
	      "relative 'marker' is another file");
	CHECK(stat("../..", &st1) == 0 && stat(zdtm_dir, &sd) == 0 && st1.st_ino == sd.st_ino,
	      "'../..' is not STATEDIR");
	n = readlink("/proc/self/root", link, sizeof(link) - 1);
	link[n > 0 ? n : 0] = 0;
	CHECK(!strcmp(link, "/"), "/proc/self/root -> '%s'", link);
	return zdtm_finish();
}
