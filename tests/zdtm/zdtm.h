/*
 * zdtm.h - tiny support library for the snapshotd ZDTM test programs.
 *
 * Protocol (driven by tests/zdtm_harness.py), each program is run as
 * `prog STATEDIR`:
 *   1. set up the state under test and remember what to expect;
 *   2. zdtm_ready()  -> writes STATEDIR/ready (ready.tmp + rename);
 *   3. loop doing work, polling zdtm_go() every few ms (access(), no fd kept);
 *      meanwhile the harness may dump, kill and restore the process;
 *   4. once STATEDIR/go exists: verify, report problems with fail(), and
 *      `return zdtm_finish();` which writes STATEDIR/result ("PASS" or
 *      "FAIL: <reasons>") and returns 0 as the exit status.
 *
 * STATEDIR is made absolute at start, so programs may chdir().  A program
 * that drops privileges calls zdtm_use_dirfd() first: from then on the
 * protocol files are reached through a directory fd instead of the path.
 * Everything here is header-only and async-signal-unsafe unless noted.
 */
#ifndef ZDTM_H
#define ZDTM_H

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>

static char zdtm_dir[PATH_MAX];
static int zdtm_dirfd = -1;
static char zdtm_failbuf[2048];
static int zdtm_nfail;
static char zdtm_faillock;

/* Build the name of a protocol file: relative to the dirfd, or absolute. */
static inline const char *zdtm_name(const char *name, char *buf, size_t len)
{
	if (zdtm_dirfd >= 0)
		snprintf(buf, len, "%s", name);
	else
		snprintf(buf, len, "%s/%s", zdtm_dir, name);
	return buf;
}

/* Absolute path of a file inside STATEDIR (for the test's own files). */
static inline const char *zdtm_path(const char *name, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%s", zdtm_dir, name);
	return buf;
}

static inline int zdtm_at(void)
{
	return zdtm_dirfd >= 0 ? zdtm_dirfd : AT_FDCWD;
}

static inline void zdtm_init(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: %s STATEDIR\n", argv[0]);
		exit(2);
	}
	if (!realpath(argv[1], zdtm_dir)) {
		perror("realpath");
		exit(2);
	}
}

/* Reach STATEDIR through an fd (needed after dropping privileges). */
static inline void zdtm_use_dirfd(void)
{
	zdtm_dirfd = open(zdtm_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (zdtm_dirfd < 0) {
		perror("open statedir");
		exit(2);
	}
}

/* Write a protocol file atomically: name.tmp, then rename to name. */
static inline void zdtm_write_file(const char *name, const char *text)
{
	char tmp[PATH_MAX], fin[PATH_MAX], t[256];
	int fd;

	snprintf(t, sizeof(t), "%s.tmp", name);
	zdtm_name(t, tmp, sizeof(tmp));
	zdtm_name(name, fin, sizeof(fin));
	fd = openat(zdtm_at(), tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		perror("open protocol file");
		exit(3);
	}
	if (write(fd, text, strlen(text)) != (ssize_t)strlen(text) || close(fd)) {
		perror("write protocol file");
		exit(3);
	}
	if (renameat(zdtm_at(), tmp, zdtm_at(), fin)) {
		perror("rename protocol file");
		exit(3);
	}
}

static inline void zdtm_ready(void)
{
	zdtm_write_file("ready", "ready\n");
}

/* Async-signal-safe: 1 once STATEDIR/go exists. */
static inline int zdtm_go(void)
{
	char p[PATH_MAX];

	return faccessat(zdtm_at(), zdtm_name("go", p, sizeof(p)), F_OK, 0) == 0;
}

/* Sleep, restarting after signal interruptions. */
static inline void zdtm_sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

static inline void zdtm_wait_go(void)
{
	while (!zdtm_go())
		zdtm_sleep_ms(2);
}

/* In a member of a process tree (tree_*.c): wait for go, then check that
 * this process is in process group pgid and session sid, that SIGUSR1 came
 * if usr1 is not NULL (the flag its handler sets; waited for up to 2 s), and
 * reap the nkids kids, each of which must exit with 0.  Returns what is
 * wrong, as a bitmask (the member's exit status): 1 the ids, 2 no SIGUSR1,
 * 4 a kid. */
static inline int zdtm_check_member(pid_t pgid, pid_t sid, const volatile sig_atomic_t *usr1,
				    const pid_t *kids, int nkids)
{
	int bad = 0;

	zdtm_wait_go();
	if (getpgrp() != pgid || getsid(0) != sid)
		bad |= 1;
	for (int i = 0; i < 400 && usr1 && !*usr1; i++)
		zdtm_sleep_ms(5);
	if (usr1 && !*usr1)
		bad |= 2;
	for (int i = 0; i < nkids; i++) {
		int st = 0;
		if (waitpid(kids[i], &st, 0) != kids[i] || !WIFEXITED(st) || WEXITSTATUS(st))
			bad |= 4;
	}
	return bad;
}

/* Record a failure.  Thread-safe, but do not call it from signal handlers. */
static inline void __attribute__((format(printf, 1, 2))) fail(const char *fmt, ...)
{
	char msg[512];
	size_t used;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	for (char *c = msg; *c; c++)
		if (*c == '\n')
			*c = ' ';
	fprintf(stderr, "FAIL: %s\n", msg);
	while (__atomic_test_and_set(&zdtm_faillock, __ATOMIC_ACQUIRE))
		;
	used = strlen(zdtm_failbuf);
	if (zdtm_nfail++ < 8)
		snprintf(zdtm_failbuf + used, sizeof(zdtm_failbuf) - used, "%s%s",
			 used ? "; " : "", msg);
	__atomic_clear(&zdtm_faillock, __ATOMIC_RELEASE);
}

#define CHECK(cond, ...)                                                       \
	do {                                                                   \
		if (!(cond))                                                   \
			fail(__VA_ARGS__);                                     \
	} while (0)

static inline int zdtm_finish(void)
{
	char buf[sizeof(zdtm_failbuf) + 16];

	if (zdtm_nfail)
		snprintf(buf, sizeof(buf), "FAIL: %s\n", zdtm_failbuf);
	else
		snprintf(buf, sizeof(buf), "PASS\n");
	zdtm_write_file("result", buf);
	return 0;
}

/* Read a whole (small) file into buf, NUL-terminated; returns length or -1. */
static inline ssize_t zdtm_read(const char *path, char *buf, size_t len)
{
	ssize_t n, off = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -1;
	while (off < (ssize_t)len - 1 && (n = read(fd, buf + off, len - 1 - off)) > 0)
		off += n;
	close(fd);
	buf[off] = 0;
	return off;
}

/* Value of a "Key:" line of a /proc status-like file, e.g. "SigBlk:". */
static inline int zdtm_status_field(const char *path, const char *key, char *out, size_t len)
{
	char buf[16384];
	char *p;

	if (zdtm_read(path, buf, sizeof(buf)) < 0)
		return -1;
	for (p = buf; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
		if (!strncmp(p, key, strlen(key))) {
			p += strlen(key);
			while (*p == ' ' || *p == '\t')
				p++;
			snprintf(out, len, "%.*s", (int)strcspn(p, "\n"), p);
			return 0;
		}
	}
	return -1;
}

/*
 * The /proc/self/maps line of the mapping containing addr (without the
 * trailing newline).  Returns 0 if found.
 */
static inline int zdtm_maps_line(const void *addr, char *out, size_t len)
{
	FILE *f = fopen("/proc/self/maps", "re");
	char line[PATH_MAX + 256];
	int ret = -1;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		unsigned long s, e;

		if (sscanf(line, "%lx-%lx", &s, &e) == 2 &&
		    (unsigned long)addr >= s && (unsigned long)addr < e) {
			line[strcspn(line, "\n")] = 0;
			snprintf(out, len, "%s", line);
			ret = 0;
			break;
		}
	}
	fclose(f);
	return ret;
}

/* Permissions ("rw-p") of the mapping containing addr, or "" if unmapped. */
static inline const char *zdtm_maps_perms(const void *addr, char perms[5])
{
	char line[PATH_MAX + 256];

	perms[0] = 0;
	if (!zdtm_maps_line(addr, line, sizeof(line)))
		sscanf(line, "%*s %4s", perms);
	return perms;
}

/* The file name column of a maps line ("" for anonymous). */
static inline const char *zdtm_maps_name(const char *line)
{
	const char *p = line;

	/* start-end perms offset dev inode   name */
	for (int field = 0; field < 5 && p; field++) {
		p = strchr(p, ' ');
		while (p && *p == ' ')
			p++;
	}
	return p ? p : "";
}

/* Receive exactly n bytes from a socket, waiting at most timeout_ms for
 * each piece; 0, or -1 on timeout, error or end of stream. */
static inline int zdtm_recv_all(int fd, char *p, size_t n, int timeout_ms)
{
	size_t got = 0;

	while (got < n) {
		struct pollfd pf = { fd, POLLIN, 0 };
		ssize_t r;

		if (poll(&pf, 1, timeout_ms) != 1)
			return -1;
		r = recv(fd, p + got, n - got, 0);
		if (r <= 0)
			return -1;
		got += r;
	}
	return 0;
}

static inline pid_t zdtm_gettid(void)
{
	return (pid_t)syscall(SYS_gettid);
}

/* Cheap deterministic pseudo-random generator (splitmix64). */
static inline uint64_t zdtm_mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

#endif /* ZDTM_H */
