/*
 * file_locks: file locks a process holds (HDF5 and NetCDF lock their files).
 *
 * The process holds on file "a": a POSIX write lock on bytes 100-199 and a
 * POSIX read lock from 1000 to EOF; on file "b": an OFD write lock on 0-9
 * (through a second open of "b", whose first open has none) and a flock
 * shared lock on a third open; on a file that is then deleted: a POSIX
 * write lock.  A child holds a POSIX write lock on "a" bytes 300-309 and
 * waits.  After go, a checker process forked then (it owns no lock) must
 * find every lock where it was, with its owner, and no lock elsewhere.
 */
#include "zdtm.h"
#include <sys/file.h>

static int setlk(int fd, int cmd, short type, off_t start, off_t len)
{
	struct flock fl = { .l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len };
	return fcntl(fd, cmd, &fl);
}

/* who holds a lock conflicting with a write lock on [start, start+len): 0 none, -1 OFD, else the pid */
static int holder(int fd, off_t start, off_t len, short *type)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = start, .l_len = len };
	if (fcntl(fd, F_GETLK, &fl))
		return -2;
	*type = fl.l_type;
	return fl.l_type == F_UNLCK ? 0 : fl.l_pid;
}

int main(int argc, char **argv)
{
	char pa[PATH_MAX], pb[PATH_MAX], pd[PATH_MAX];
	zdtm_init(argc, argv);
	zdtm_path("a", pa, sizeof(pa));
	zdtm_path("b", pb, sizeof(pb));
	zdtm_path("gone", pd, sizeof(pd));
	int a = open(pa, O_RDWR | O_CREAT, 0644), b1 = open(pb, O_RDWR | O_CREAT, 0644);
	int b2 = open(pb, O_RDWR), b3 = open(pb, O_RDONLY), d = open(pd, O_RDWR | O_CREAT, 0644);
	if (a < 0 || b1 < 0 || b2 < 0 || b3 < 0 || d < 0 || ftruncate(a, 4096) || ftruncate(b1, 4096))
		return perror("open"), 1;
	if (setlk(a, F_SETLK, F_WRLCK, 100, 100) || setlk(a, F_SETLK, F_RDLCK, 1000, 0) ||
	    setlk(b2, F_OFD_SETLK, F_WRLCK, 0, 10) || flock(b3, LOCK_SH | LOCK_NB) ||
	    setlk(d, F_SETLK, F_WRLCK, 0, 0) || unlink(pd))
		return perror("lock"), 1;
	int go[2];
	if (pipe(go))
		return 1;
	pid_t child = fork();
	if (child == 0) {
		char c;
		close(go[1]); /* end of file when the parent is gone: never outlive it */
		if (setlk(a, F_SETLK, F_WRLCK, 300, 10))
			_exit(2);
		/* the parent tells us when to go: until then we hold the lock */
		if (read(go[0], &c, 1) != 1)
			_exit(3);
		_exit(0);
	}
	close(go[0]);
	zdtm_sleep_ms(50);
	zdtm_ready();
	zdtm_wait_go();

	pid_t me = getpid();
	int r[2];
	if (pipe(r))
		return 1;
	pid_t chk = fork();
	if (chk == 0) { /* a process with no lock: it sees every lock as someone else's */
		short t;
		char bad = 0;
		int fa = open(pa, O_RDWR), fb = open(pb, O_RDWR), fd2 = open(pb, O_RDONLY);
		bad |= holder(fa, 100, 100, &t) != me || t != F_WRLCK;              /* 1: POSIX write */
		bad |= (holder(fa, 1000, 10, &t) != me || t != F_RDLCK) << 1;      /* 2: POSIX read to EOF */
		bad |= (holder(fa, 300, 10, &t) != child || t != F_WRLCK) << 2;    /* 3: the child's */
		bad |= (holder(fa, 0, 50, &t) != 0) << 3;                          /* 4: nothing else */
		bad |= (holder(fb, 0, 10, &t) != -1) << 4;                         /* 5: OFD (no pid) */
		bad |= (flock(fd2, LOCK_EX | LOCK_NB) == 0) << 5;                  /* 6: flock shared */
		bad |= (flock(fd2, LOCK_SH | LOCK_NB) != 0) << 6;                  /* 7: ... and shared */
		bad |= (holder(d, 0, 1, &t) != me) << 7;                           /* 8: the deleted file */
		if (write(r[1], &bad, 1) != 1)
			_exit(1);
		_exit(0);
	}
	char bad = 0x7f;
	CHECK(read(r[0], &bad, 1) == 1, "the checker did not answer");
	waitpid(chk, NULL, 0);
	const char *what[] = { "POSIX write lock", "POSIX read lock to EOF", "the child's POSIX lock",
			       "no lock where none was", "OFD lock", "flock (not exclusive)", "flock shared",
			       "the deleted file's lock" };
	for (int i = 0; i < 8; i++)
		CHECK(!(bad & (1 << i)), "lock check %d failed: %s", i + 1, what[i]);
	CHECK(write(go[1], "g", 1) == 1, "child gone");
	int st = -1;
	CHECK(waitpid(child, &st, 0) == child && WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %d", st);
	return zdtm_finish();
}
