/*
 * tree_unix_pair: socketpairs between parent and child, messages queued both ways.
 *
 * Three socketpairs (stream, datagram, seqpacket) with one end in the
 * parent and the other in the child; before ready each side sends three
 * messages of different sizes that the other has not read yet.  A fourth
 * stream pair has one end open in both processes (one open file description,
 * inherited across fork).  After go the child reads and checks the parent's
 * messages (boundaries kept for datagram and seqpacket), sets O_NONBLOCK on
 * the shared end and tells the parent, which reads the child's messages and
 * checks that it sees the flag (the description is still shared).  Works
 * whether the tree was restored or ran on after a dump.
 */
#include "zdtm.h"
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>

static const int CSIZE[3] = {1, 100, 3000}, PSIZE[3] = {5, 200, 4000};

static void fill(unsigned char *b, int n, int seed)
{
	for (int i = 0; i < n; i++)
		b[i] = zdtm_mix(seed * 100000 + i) & 0xff;
}

static int send_all(int fd, const int *sizes, int seed)
{
	static unsigned char b[8192];
	for (int m = 0; m < 3; m++) {
		fill(b, sizes[m], seed + m);
		if (send(fd, b, sizes[m], 0) != sizes[m])
			return -1;
	}
	return 0;
}

/* 0 if fd delivers the three messages (stream: their bytes in order) */
static int check_msgs(int fd, const int *sizes, int seed, int stream)
{
	static unsigned char b[16384], want[8192];
	for (int m = 0; m < 3; m++) {
		fill(want, sizes[m], seed + m);
		int got = 0;
		do {
			ssize_t r = recv(fd, b + got, stream ? sizes[m] - got : sizeof(b), 0);
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				return -1;
			got += r;
		} while (stream && got < sizes[m]);
		if (got != sizes[m] || memcmp(b, want, got))
			return -1;
	}
	return 0;
}

static void wait_readable(int fd)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	while (poll(&p, 1, -1) < 0 && errno == EINTR)
		;
}

int main(int argc, char **argv)
{
	int sv[3][2], sh[2], st = 0;
	const int types[3] = {SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET};

	zdtm_init(argc, argv);
	for (int k = 0; k < 3; k++)
		if (socketpair(AF_UNIX, types[k], 0, sv[k]))
			return 2;
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sh))
		return 2;
	pid_t child = fork();
	if (child == 0) {
		int bad = 0;
		close(sh[1]);
		for (int k = 0; k < 3; k++) {
			close(sv[k][0]);
			if (send_all(sv[k][1], CSIZE, 10 * k))
				_exit(3);
		}
		zdtm_wait_go();
		for (int k = 0; k < 3; k++)
			bad |= check_msgs(sv[k][1], PSIZE, 100 + 10 * k, types[k] == SOCK_STREAM) ? 1 << k : 0;
		fcntl(sh[0], F_SETFL, fcntl(sh[0], F_GETFL) | O_NONBLOCK);
		if (write(sv[0][1], "k", 1) != 1)
			bad |= 8;
		_exit(bad);
	}
	for (int k = 0; k < 3; k++) {
		close(sv[k][1]);
		CHECK(send_all(sv[k][0], PSIZE, 100 + 10 * k) == 0, "send: %m");
	}
	for (int k = 0; k < 3; k++)
		wait_readable(sv[k][0]); /* the child's messages are queued */
	zdtm_ready();
	zdtm_wait_go();

	for (int k = 0; k < 3; k++)
		CHECK(check_msgs(sv[k][0], CSIZE, 10 * k, types[k] == SOCK_STREAM) == 0,
		      "messages from the child on the %s pair lost or changed", k == 0 ? "stream" : k == 1 ? "dgram" : "seqpacket");
	char c = 0;
	CHECK(read(sv[0][0], &c, 1) == 1 && c == 'k', "no word from the child");
	CHECK(fcntl(sh[0], F_GETFL) & O_NONBLOCK, "O_NONBLOCK set by the child not seen: the description is not shared");
	CHECK(write(sh[0], "x", 1) == 1 && read(sh[1], &c, 1) == 1 && c == 'x', "the shared pair does not work");
	CHECK(waitpid(child, &st, 0) == child, "waitpid: %m");
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child reported %#x (its messages lost or changed)", st);
	return zdtm_finish();
}
