/*
 * ipc_inotify: an inotify instance with watches on two directories and a
 * file in STATEDIR, with a gap in the watch numbers (a removed watch).
 *
 * After go: the watch numbers are the same (adding an existing watch again
 * returns its wd); creating a file in dir1 reports IN_CREATE with its name
 * on dir1's wd; writing to the watched file reports IN_MODIFY on its wd;
 * nothing is reported for the removed watch's directory.
 */
#include "zdtm.h"
#include <sys/inotify.h>

int main(int argc, char **argv)
{
	char d1[PATH_MAX], d2[PATH_MAX], d3[PATH_MAX], f[PATH_MAX], p[PATH_MAX + 16];
	char buf[4096] __attribute__((aligned(8)));
	int in, w1, w2, w3, wf, fd;
	ssize_t n;

	zdtm_init(argc, argv);
	zdtm_path("dir1", d1, sizeof(d1));
	zdtm_path("dir2", d2, sizeof(d2));
	zdtm_path("dir3", d3, sizeof(d3));
	zdtm_path("watched", f, sizeof(f));
	mkdir(d1, 0755);
	mkdir(d2, 0755);
	mkdir(d3, 0755);
	close(open(f, O_CREAT | O_WRONLY, 0644));
	in = inotify_init1(IN_NONBLOCK);
	w1 = inotify_add_watch(in, d1, IN_CREATE);
	w2 = inotify_add_watch(in, d2, IN_CREATE);
	w3 = inotify_add_watch(in, d3, IN_CREATE | IN_DELETE);
	wf = inotify_add_watch(in, f, IN_MODIFY);
	if (in < 0 || w1 < 0 || w2 < 0 || w3 < 0 || wf < 0 || inotify_rm_watch(in, w2))
		return perror("inotify"), 1;
	while (read(in, buf, sizeof(buf)) > 0) /* the IN_IGNORED of w2 */
		;

	zdtm_ready();
	zdtm_wait_go();

	CHECK(inotify_add_watch(in, d1, IN_CREATE) == w1, "dir1 wd changed");
	CHECK(inotify_add_watch(in, d3, IN_CREATE | IN_DELETE) == w3, "dir3 wd changed");
	CHECK(inotify_add_watch(in, f, IN_MODIFY) == wf, "file wd changed");
	snprintf(p, sizeof(p), "%s/new", d2);
	close(open(p, O_CREAT | O_WRONLY, 0644));
	snprintf(p, sizeof(p), "%s/new", d1);
	close(open(p, O_CREAT | O_WRONLY, 0644));
	fd = open(f, O_WRONLY);
	write(fd, "x", 1);
	close(fd);
	zdtm_sleep_ms(10);
	n = read(in, buf, sizeof(buf));
	int seen_create = 0, seen_modify = 0, other = 0;
	for (char *q = buf; n > 0 && q < buf + n;) {
		struct inotify_event *e = (struct inotify_event *)q;

		if (e->wd == w1 && (e->mask & IN_CREATE) && !strcmp(e->name, "new"))
			seen_create++;
		else if (e->wd == wf && (e->mask & IN_MODIFY))
			seen_modify++;
		else
			other++;
		q += sizeof(*e) + e->len;
	}
	CHECK(seen_create == 1 && seen_modify >= 1 && other == 0, "events: create %d modify %d other %d",
	      seen_create, seen_modify, other);
	return zdtm_finish();
}
