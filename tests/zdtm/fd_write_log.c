/*
 * fd_write_log: a write-only log file that continues after restore.
 *
 * Opens STATEDIR/app.log O_WRONLY|O_CREAT|O_TRUNC and writes numbered lines
 * "line 000001 <checksum>\n" (fixed length) every couple of ms.  After go it
 * writes one more line and checks the fd offset is exactly N lines, then
 * re-reads the file: the first N lines are lines 1..N in order, with no gap,
 * repeat or garbage.  (Lines the original wrote after the dump, before it
 * was killed, may follow: they are identical to what the restored process
 * writes at the same offsets, so whatever follows must also continue the
 * sequence.)
 */
#include "zdtm.h"

#define LINE 32

static void fmt(char *buf, unsigned long n)
{
	snprintf(buf, LINE + 1, "line %06lu %016lx\n", n, zdtm_mix(n) >> 8);
	memset(buf + strlen(buf) - 1, ' ', LINE - strlen(buf) + 1); /* pad */
	buf[LINE - 1] = '\n';
}

int main(int argc, char **argv)
{
	char path[PATH_MAX], line[LINE + 1], got[LINE];
	unsigned long n = 0;
	int fd, rd;
	off_t size;

	zdtm_init(argc, argv);
	zdtm_path("app.log", path, sizeof(path));
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		return perror(path), 1;
	for (; n < 10; ) { /* some lines before ready */
		fmt(line, ++n);
		if (write(fd, line, LINE) != LINE)
			return perror("write"), 1;
	}

	zdtm_ready();
	while (!zdtm_go()) {
		fmt(line, ++n);
		if (write(fd, line, LINE) != LINE) {
			fail("write of line %lu: %m", n);
			break;
		}
		zdtm_sleep_ms(2);
	}
	fmt(line, ++n);
	CHECK(write(fd, line, LINE) == LINE, "final write: %m");
	CHECK(lseek(fd, 0, SEEK_CUR) == (off_t)(n * LINE), "offset %ld after %lu lines",
	      (long)lseek(fd, 0, SEEK_CUR), n);
	close(fd);

	rd = open(path, O_RDONLY);
	size = lseek(rd, 0, SEEK_END);
	CHECK(size % LINE == 0 && size >= (off_t)(n * LINE), "log size %ld for %lu lines",
	      (long)size, n);
	for (unsigned long i = 1; i <= (unsigned long)size / LINE; i++) {
		fmt(line, i);
		if (pread(rd, got, LINE, (i - 1) * LINE) != LINE || memcmp(got, line, LINE)) {
			fail("log line %lu is wrong: '%.*s'", i, LINE - 1, got);
			break;
		}
	}
	close(rd);
	return zdtm_finish();
}
