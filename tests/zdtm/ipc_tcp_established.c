/*
 * ipc_tcp_established: an established TCP connection over loopback, both
 * ends in this process, with unread data in both directions.
 *
 * The client sent 20000 pattern bytes and "ping" that the server has not
 * read; the server sent "reply" that the client has not read; the client
 * end has TCP_NODELAY and O_NONBLOCK.  After go: the same addresses and
 * ports on both ends, the queued bytes read back in order, then 1 MB more
 * goes each way (the sequence numbers and windows agree), the options are
 * kept, and the server sees end of file when the client shuts down.
 */
#include "zdtm.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#define BIG 20000
#define MORE (1 << 20)

static char buf[MORE], want[BIG];

static int read_all(int fd, char *p, size_t n)
{
	return zdtm_recv_all(fd, p, n, 3000);
}

static void *writer(void *arg)
{
	int fd = *(int *)arg;
	size_t sent = 0;

	while (sent < MORE) {
		struct pollfd pf = { fd, POLLOUT, 0 };
		ssize_t r;

		poll(&pf, 1, 3000);
		r = send(fd, buf + sent, MORE - sent, MSG_DONTWAIT);
		if (r < 0 && errno != EAGAIN)
			break;
		if (r > 0)
			sent += r;
	}
	return NULL;
}

#include <pthread.h>

int main(int argc, char **argv)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) }, cl0, sv0, x;
	socklen_t l = sizeof(a);
	static char more[MORE];
	int ls, c, s, one = 1, v;
	pthread_t th;

	zdtm_init(argc, argv);
	ls = socket(AF_INET, SOCK_STREAM, 0);
	if (bind(ls, (void *)&a, sizeof(a)) || listen(ls, 1) || getsockname(ls, (void *)&a, &l))
		return perror("listen"), 1;
	c = socket(AF_INET, SOCK_STREAM, 0);
	if (connect(c, (void *)&a, sizeof(a)) || (s = accept(ls, NULL, NULL)) < 0)
		return perror("connect"), 1;
	close(ls);
	setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	for (int i = 0; i < BIG; i++)
		want[i] = (char)zdtm_mix(i);
	if (send(c, want, BIG, 0) != BIG || send(c, "ping", 4, 0) != 4 || send(s, "reply", 5, 0) != 5)
		return perror("send"), 1;
	fcntl(c, F_SETFL, O_NONBLOCK);
	l = sizeof(cl0);
	getsockname(c, (void *)&cl0, &l);
	l = sizeof(sv0);
	getsockname(s, (void *)&sv0, &l);
	zdtm_sleep_ms(20); /* let the loopback ACKs come back */

	zdtm_ready();
	zdtm_wait_go();

	l = sizeof(x);
	CHECK(getsockname(c, (void *)&x, &l) == 0 && x.sin_port == cl0.sin_port, "client port changed");
	l = sizeof(x);
	CHECK(getpeername(c, (void *)&x, &l) == 0 && x.sin_port == sv0.sin_port, "client peer changed");
	l = sizeof(x);
	CHECK(getpeername(s, (void *)&x, &l) == 0 && x.sin_port == cl0.sin_port, "server peer changed");
	l = sizeof(v);
	CHECK(getsockopt(c, IPPROTO_TCP, TCP_NODELAY, &v, &l) == 0 && v, "TCP_NODELAY lost");
	CHECK(fcntl(c, F_GETFL) & O_NONBLOCK, "O_NONBLOCK lost");
	CHECK(read_all(s, buf, BIG + 4) == 0 && !memcmp(buf, want, BIG) && !memcmp(buf + BIG, "ping", 4),
	      "server: queued bytes differ");
	CHECK(read_all(c, buf, 5) == 0 && !memcmp(buf, "reply", 5), "client: queued reply differs");
	for (int i = 0; i < MORE; i++)
		buf[i] = (char)zdtm_mix(i + 7);
	/* 1 MB each way, concurrently (the buffers are smaller than that) */
	pthread_create(&th, NULL, writer, &c);
	CHECK(read_all(s, more, MORE) == 0 && !memcmp(more, buf, MORE), "server: 1 MB after restore differs");
	pthread_join(th, NULL);
	pthread_create(&th, NULL, writer, &s);
	CHECK(read_all(c, more, MORE) == 0 && !memcmp(more, buf, MORE), "client: 1 MB after restore differs");
	pthread_join(th, NULL);
	shutdown(c, SHUT_WR);
	struct pollfd pf = { s, POLLIN, 0 };
	CHECK(poll(&pf, 1, 2000) == 1 && recv(s, buf, 1, 0) == 0, "server: no end of file");
	return zdtm_finish();
}
