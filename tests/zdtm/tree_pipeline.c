/*
 * tree_pipeline: a shell pipeline, `sh -c 'producer | consumer'`.
 *
 * Started as `tree_pipeline STATEDIR`, it execs /bin/sh -c with itself as
 * producer and consumer, so the tree is sh and its two children joined by
 * a pipe.  The producer writes lines "0".."19999": the first 5000 before
 * go, the rest after.  The consumer reads the first 2000 lines one byte at a
 * time, waits until the remaining 3000 lines of the first part are queued in
 * the pipe, writes ready; after go it reads to EOF, checks the sequence,
 * prints "lines=N sum=S" and writes the result.  The shell exits after both.
 */
#include "zdtm.h"
#include <sys/ioctl.h>

#define N 20000
#define FIRST 5000
#define READ_EARLY 2000

static int produce(void)
{
	char line[32];
	for (int i = 0; i < N; i++) {
		if (i == FIRST)
			zdtm_wait_go();
		int l = snprintf(line, sizeof(line), "%d\n", i);
		for (int off = 0; off < l;) {
			ssize_t w = write(1, line + off, l - off);
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0)
				return 1;
			off += w;
		}
	}
	return 0;
}

static long bytes_of(int from, int to)
{
	char line[32];
	long n = 0;
	for (int i = from; i < to; i++)
		n += snprintf(line, sizeof(line), "%d\n", i);
	return n;
}

static int consume(void)
{
	long lines = 0, sum = 0, cur = 0, expect = 0;
	int in_num = 0, bad = 0;
	char c, buf[4096];

	/* the first lines one byte at a time: the rest stays in the pipe */
	while (lines < READ_EARLY && read(0, &c, 1) == 1) {
		if (c == '\n') {
			bad |= cur != expect++;
			sum += cur;
			lines++;
			cur = 0;
		} else {
			cur = cur * 10 + (c - '0');
		}
	}
	long want = bytes_of(READ_EARLY, FIRST);
	int queued = 0;
	while (queued < want) {
		if (ioctl(0, FIONREAD, &queued) < 0 && errno != EINTR)
			return 2;
		if (queued < want)
			zdtm_sleep_ms(1);
	}
	zdtm_ready();
	zdtm_wait_go();
	for (;;) {
		ssize_t r = read(0, buf, sizeof(buf));
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		for (ssize_t i = 0; i < r; i++) {
			if (buf[i] == '\n') {
				bad |= cur != expect++;
				sum += cur;
				lines++;
				cur = 0;
				in_num = 0;
			} else {
				cur = cur * 10 + (buf[i] - '0');
				in_num = 1;
			}
		}
	}
	printf("lines=%ld sum=%ld\n", lines, sum);
	fflush(stdout);
	CHECK(!in_num, "the output ends in the middle of a line");
	CHECK(!bad, "lines out of sequence");
	CHECK(lines == N, "%ld lines, want %d", lines, N);
	CHECK(sum == (long)N * (N - 1) / 2, "sum %ld", sum);
	return zdtm_finish();
}

int main(int argc, char **argv)
{
	char self[PATH_MAX], cmd[3 * PATH_MAX];

	if (argc == 3 && !strcmp(argv[1], "produce")) {
		char *a[] = {argv[0], argv[2]};
		zdtm_init(2, a);
		return produce();
	}
	if (argc == 3 && !strcmp(argv[1], "consume")) {
		char *a[] = {argv[0], argv[2]};
		zdtm_init(2, a);
		return consume();
	}
	zdtm_init(argc, argv);
	ssize_t l = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (l <= 0)
		return 2;
	self[l] = 0;
	snprintf(cmd, sizeof(cmd), "'%s' produce '%s' | '%s' consume '%s'", self, zdtm_dir, self, zdtm_dir);
	execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
	return 127;
}
