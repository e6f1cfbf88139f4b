/*
 * fd_numbers: file descriptor numbers, including high ones.
 *
 * Opens four files in STATEDIR (content "file-N") and moves them with dup2()
 * to fds 17, 100, 511 and 1000 (closing the originals), leaving holes.  It
 * records the sorted list of open fds and each fd's /proc/self/fd link and
 * inode.  After go the fd list is identical, every fd links to the same path
 * and inode, and each high fd reads back its own file's content.
 */
#include "zdtm.h"
#include <dirent.h>

#define MAXFD 64

static const int high[4] = { 17, 100, 511, 1000 };

struct fdinfo {
	int fd;
	char link[PATH_MAX];
	ino_t ino;
};

static int snap(struct fdinfo *out)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0, self = dirfd(d);

	while ((e = readdir(d)) && n < MAXFD) {
		int fd;
		char p[64];
		struct stat st;
		ssize_t l;

		if (e->d_name[0] == '.' || (fd = atoi(e->d_name)) == self)
			continue;
		out[n].fd = fd;
		snprintf(p, sizeof(p), "/proc/self/fd/%d", fd);
		l = readlink(p, out[n].link, PATH_MAX - 1);
		out[n].link[l > 0 ? l : 0] = 0;
		out[n].ino = fstat(fd, &st) ? 0 : st.st_ino;
		n++;
	}
	closedir(d);
	for (int i = 0; i < n; i++) /* sort by fd */
		for (int j = i + 1; j < n; j++)
			if (out[j].fd < out[i].fd) {
				struct fdinfo t = out[i];
				out[i] = out[j];
				out[j] = t;
			}
	return n;
}

int main(int argc, char **argv)
{
	static struct fdinfo f0[MAXFD], f1[MAXFD];
	char path[PATH_MAX], buf[32], want[32];
	int n0, n1;

	zdtm_init(argc, argv);
	for (int i = 0; i < 4; i++) {
		snprintf(buf, sizeof(buf), "fd-file-%d", i);
		zdtm_path(buf, path, sizeof(path));
		int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
		snprintf(want, sizeof(want), "file-%d\n", high[i]);
		if (fd < 0 || write(fd, want, strlen(want)) != (ssize_t)strlen(want))
			return perror(path), 1;
		if (dup2(fd, high[i]) != high[i])
			return perror("dup2"), 1;
		close(fd);
	}
	n0 = snap(f0);

	zdtm_ready();
	zdtm_wait_go();

	n1 = snap(f1);
	CHECK(n1 == n0, "%d fds open, were %d", n1, n0);
	for (int i = 0; i < n0 && i < n1; i++) {
		if (f0[i].fd != f1[i].fd) {
			fail("fd list differs: fd %d where %d was", f1[i].fd, f0[i].fd);
			break;
		}
		CHECK(!strcmp(f0[i].link, f1[i].link) && f0[i].ino == f1[i].ino,
		      "fd %d -> '%s' (ino %lu), was '%s' (ino %lu)", f0[i].fd, f1[i].link,
		      f1[i].ino, f0[i].link, f0[i].ino);
	}
	for (int i = 0; i < 4; i++) {
		snprintf(want, sizeof(want), "file-%d\n", high[i]);
		memset(buf, 0, sizeof(buf));
		CHECK(pread(high[i], buf, sizeof(buf) - 1, 0) == (ssize_t)strlen(want) &&
		      !strcmp(buf, want), "fd %d reads '%s'", high[i], buf);
	}
	return zdtm_finish();
}
