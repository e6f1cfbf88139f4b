/*
 * ipc_unix_pair: unix socketpairs with data queued in both directions.
 *
 * A stream, a datagram and a seqpacket pair, each with messages of 1, 100,
 * 3000 and 70000 bytes (the latter two not for datagrams larger than the
 * default buffers) queued a->b and 2 messages b->a; a stream pair whose b end
 * did shutdown(SHUT_WR) after sending "bye"; a stream end whose peer was
 * closed with "last words" still queued; O_NONBLOCK on one end.
 * After go: every queue reads back message by message with the same sizes
 * and bytes (boundaries kept for datagram and seqpacket), then EAGAIN; the
 * shut-down and orphaned streams give their data, then end of file; the
 * pairs still talk both ways; the socket types are the same.
 */
#include "zdtm.h"
#include <sys/socket.h>

static const int types[3] = { SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET };
static const size_t sizes[4] = { 1, 100, 3000, 70000 };
static char buf[200000], want[200000];

static void fill(char *p, size_t n, int seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (char)zdtm_mix(seed * 1000003ULL + i);
}

static void check_queue(int fd, int type, int nmsg, int seed, const char *what)
{
	size_t total = 0, got = 0;
	int fl = fcntl(fd, F_GETFL);

	fcntl(fd, F_SETFL, fl | O_NONBLOCK);
	for (int i = 0; i < nmsg; i++) {
		size_t n = sizes[i];

		fill(want + total, n, seed + i);
		if (type != SOCK_STREAM) {
			ssize_t r = recv(fd, buf, sizeof(buf), 0);

			CHECK(r == (ssize_t)n && !memcmp(buf, want + total, n), "%s: message %d has %zd bytes, want %zu",
			      what, i, r, n);
		}
		total += n;
	}
	if (type == SOCK_STREAM) {
		ssize_t r;

		while (got < total && (r = recv(fd, buf + got, sizeof(buf) - got, 0)) > 0)
			got += r;
		CHECK(got == total && !memcmp(buf, want, total), "%s: %zu bytes, want %zu", what, got, total);
	}
	CHECK(recv(fd, buf, 1, 0) == -1 && errno == EAGAIN, "%s: more data than queued", what);
	fcntl(fd, F_SETFL, fl);
}

int main(int argc, char **argv)
{
	int sv[3][2], shut[2], orph[2], nab[3];
	static const char *names[3] = { "stream", "dgram", "seqpacket" };

	zdtm_init(argc, argv);
	for (int t = 0; t < 3; t++) {
		if (socketpair(AF_UNIX, types[t], 0, sv[t]))
			return perror("socketpair"), 1;
		nab[t] = types[t] == SOCK_DGRAM ? 3 : 4;
		for (int i = 0; i < nab[t]; i++) {
			fill(buf, sizes[i], 10 * t + i);
			if (send(sv[t][0], buf, sizes[i], 0) != (ssize_t)sizes[i])
				return perror("send a->b"), 1;
		}
		for (int i = 0; i < 2; i++) {
			fill(buf, sizes[i], 100 + 10 * t + i);
			if (send(sv[t][1], buf, sizes[i], 0) != (ssize_t)sizes[i])
				return perror("send b->a"), 1;
		}
	}
	fcntl(sv[1][1], F_SETFL, O_NONBLOCK);
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, shut) || socketpair(AF_UNIX, SOCK_STREAM, 0, orph))
		return perror("socketpair"), 1;
	send(shut[1], "bye", 3, 0);
	shutdown(shut[1], SHUT_WR);
	send(orph[1], "last words", 10, 0);
	close(orph[1]);

	zdtm_ready();
	zdtm_wait_go();

	for (int t = 0; t < 3; t++) {
		char what[64];
		int type = 0;
		socklen_t len = sizeof(type);

		getsockopt(sv[t][0], SOL_SOCKET, SO_TYPE, &type, &len);
		CHECK(type == types[t], "%s: type %d", names[t], type);
		snprintf(what, sizeof(what), "%s a<-b", names[t]);
		check_queue(sv[t][0], types[t], 2, 100 + 10 * t, what);
		snprintf(what, sizeof(what), "%s b<-a", names[t]);
		check_queue(sv[t][1], types[t], nab[t], 10 * t, what);
		CHECK(send(sv[t][0], "ping", 4, 0) == 4 && recv(sv[t][1], buf, 10, 0) == 4 && !memcmp(buf, "ping", 4),
		      "%s: a->b after restore", names[t]);
		CHECK(send(sv[t][1], "pong", 4, 0) == 4 && recv(sv[t][0], buf, 10, 0) == 4 && !memcmp(buf, "pong", 4),
		      "%s: b->a after restore", names[t]);
	}
	CHECK(fcntl(sv[1][1], F_GETFL) & O_NONBLOCK, "lost O_NONBLOCK");
	CHECK(recv(shut[0], buf, 10, 0) == 3 && !memcmp(buf, "bye", 3) && recv(shut[0], buf, 10, 0) == 0,
	      "shut-down stream: no data then EOF");
	CHECK(send(shut[0], "x", 1, 0) == 1, "shut-down stream: other direction closed");
	CHECK(recv(orph[0], buf, 20, 0) == 10 && !memcmp(buf, "last words", 10) && recv(orph[0], buf, 10, 0) == 0,
	      "orphaned stream: no data then EOF");
	return zdtm_finish();
}
