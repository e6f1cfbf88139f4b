/*
 * tree_tcp: a TCP connection over loopback between parent and child.
 *
 * The parent listens on 127.0.0.1 (an ephemeral port), forks a child that
 * keeps the listener too (one description in both) and connects; the parent
 * accepts.  Before ready each side sends bytes the other has not read, and
 * waits until its peer acknowledged them (SIOCOUTQ == 0).  After go the
 * child reads and checks the parent's 5000 bytes plus 1000 sent after go,
 * connects a second time (the restored listener accepts) and sends "done";
 * the parent reads the child's 3000 bytes, accepts, and reads "done".
 */
#include "zdtm.h"
#include <arpa/inet.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>

static unsigned char pbuf[6000], cbuf[3000];

static int read_full(int fd, unsigned char *b, int n)
{
	int got = 0;
	while (got < n) {
		ssize_t r = read(fd, b + got, n - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		got += r;
	}
	return got;
}

static void wait_acked(int fd)
{
	int q = 1;
	while (ioctl(fd, SIOCOUTQ, &q) == 0 && q > 0)
		zdtm_sleep_ms(1);
}

int main(int argc, char **argv)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t alen = sizeof(a);
	int sync[2], st = 0;
	char c;

	zdtm_init(argc, argv);
	for (int i = 0; i < 6000; i++)
		pbuf[i] = zdtm_mix(i) & 0xff;
	for (int i = 0; i < 3000; i++)
		cbuf[i] = zdtm_mix(70000 + i) & 0xff;
	int l = socket(AF_INET, SOCK_STREAM, 0);
	if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 4) ||
	    getsockname(l, (struct sockaddr *)&a, &alen) || pipe(sync))
		return 2;
	pid_t child = fork();
	if (child == 0) {
		static unsigned char in[6000];
		int s = socket(AF_INET, SOCK_STREAM, 0), bad = 0;
		if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof(a)) || write(s, cbuf, 3000) != 3000)
			_exit(3);
		wait_acked(s);
		if (write(sync[1], "c", 1) != 1)
			_exit(3);
		zdtm_wait_go();
		bad |= read_full(s, in, 6000) != 6000 || memcmp(in, pbuf, 6000) ? 1 : 0;
		int s2 = socket(AF_INET, SOCK_STREAM, 0);
		bad |= s2 < 0 || connect(s2, (struct sockaddr *)&a, sizeof(a)) ? 2 : 0;
		bad |= write(s2, "done", 4) != 4 ? 4 : 0;
		close(s2);
		_exit(bad);
	}
	int s = accept(l, NULL, NULL);
	CHECK(s >= 0, "accept: %m");
	CHECK(write(s, pbuf, 5000) == 5000, "write: %m");
	wait_acked(s);
	CHECK(read(sync[0], &c, 1) == 1, "the child did not start");
	zdtm_ready();
	zdtm_wait_go();

	CHECK(write(s, pbuf + 5000, 1000) == 1000, "write after go: %m");
	static unsigned char in[3000];
	CHECK(read_full(s, in, 3000) == 3000 && memcmp(in, cbuf, 3000) == 0, "the child's 3000 bytes lost or changed");
	int s2 = accept(l, NULL, NULL);
	unsigned char done[8] = {0};
	CHECK(s2 >= 0 && read_full(s2, done, 4) == 4 && memcmp(done, "done", 4) == 0, "no second connection from the child");
	CHECK(waitpid(child, &st, 0) == child, "waitpid: %m");
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child reported %#x", st);
	return zdtm_finish();
}
