/*
 * ipc_tcp_options: the options a server and its connections are tuned with.
 *
 * A listener with SO_KEEPALIVE, TCP_KEEPIDLE 33, TCP_KEEPINTVL 7,
 * TCP_KEEPCNT 4, SO_LINGER {on, 5 s}, TCP_USER_TIMEOUT 1234, SO_PRIORITY 3
 * and a fixed SO_SNDBUF; a loopback connection accepted on it whose client
 * end has TCP_NODELAY, TCP_CORK, a fixed SO_RCVBUF and SO_BINDTODEVICE lo,
 * and whose server end has SO_KEEPALIVE with TCP_KEEPIDLE 77.  After go every
 * option reads back as set (buffer sizes exactly, still fixed), the
 * connection carries data, and an option never set is still unset.
 */
#include "zdtm.h"
#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#ifndef SO_BUF_LOCK
#define SO_BUF_LOCK 72
#endif

static int geti(int fd, int lvl, int opt)
{
	int v = -1;
	socklen_t l = sizeof(v);
	return getsockopt(fd, lvl, opt, &v, &l) ? -1 : v;
}

static int seti(int fd, int lvl, int opt, int v)
{
	return setsockopt(fd, lvl, opt, &v, sizeof(v));
}

int main(int argc, char **argv)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t l = sizeof(a);
	struct linger lg = { 1, 5 };
	zdtm_init(argc, argv);
	int ls = socket(AF_INET, SOCK_STREAM, 0);
	if (seti(ls, SOL_SOCKET, SO_KEEPALIVE, 1) || seti(ls, IPPROTO_TCP, TCP_KEEPIDLE, 33) ||
	    seti(ls, IPPROTO_TCP, TCP_KEEPINTVL, 7) || seti(ls, IPPROTO_TCP, TCP_KEEPCNT, 4) ||
	    setsockopt(ls, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) || seti(ls, IPPROTO_TCP, TCP_USER_TIMEOUT, 1234) ||
	    seti(ls, SOL_SOCKET, SO_PRIORITY, 3) || seti(ls, SOL_SOCKET, SO_SNDBUF, 50000))
		return perror("listener options"), 1;
	if (bind(ls, (void *)&a, sizeof(a)) || listen(ls, 4) || getsockname(ls, (void *)&a, &l))
		return perror("listen"), 1;
	int c = socket(AF_INET, SOCK_STREAM, 0), s;
	if (seti(c, SOL_SOCKET, SO_RCVBUF, 70000) || setsockopt(c, SOL_SOCKET, SO_BINDTODEVICE, "lo", 3))
		return perror("client options"), 1;
	if (connect(c, (void *)&a, sizeof(a)) || (s = accept(ls, NULL, NULL)) < 0)
		return perror("connect"), 1;
	if (seti(c, IPPROTO_TCP, TCP_NODELAY, 1) || seti(c, IPPROTO_TCP, TCP_CORK, 1) ||
	    seti(s, SOL_SOCKET, SO_KEEPALIVE, 1) || seti(s, IPPROTO_TCP, TCP_KEEPIDLE, 77))
		return perror("connection options"), 1;
	int lsnd = geti(ls, SOL_SOCKET, SO_SNDBUF), crcv = geti(c, SOL_SOCKET, SO_RCVBUF);

	zdtm_ready();
	zdtm_wait_go();

	CHECK(geti(ls, SOL_SOCKET, SO_KEEPALIVE) == 1, "listener SO_KEEPALIVE lost");
	CHECK(geti(ls, IPPROTO_TCP, TCP_KEEPIDLE) == 33, "listener TCP_KEEPIDLE %d", geti(ls, IPPROTO_TCP, TCP_KEEPIDLE));
	CHECK(geti(ls, IPPROTO_TCP, TCP_KEEPINTVL) == 7, "listener TCP_KEEPINTVL lost");
	CHECK(geti(ls, IPPROTO_TCP, TCP_KEEPCNT) == 4, "listener TCP_KEEPCNT lost");
	CHECK(geti(ls, IPPROTO_TCP, TCP_USER_TIMEOUT) == 1234, "listener TCP_USER_TIMEOUT lost");
	CHECK(geti(ls, SOL_SOCKET, SO_PRIORITY) == 3, "listener SO_PRIORITY lost");
	struct linger g = { 0, 0 };
	l = sizeof(g);
	CHECK(getsockopt(ls, SOL_SOCKET, SO_LINGER, &g, &l) == 0 && g.l_onoff == 1 && g.l_linger == 5,
	      "listener SO_LINGER is {%d, %d}", g.l_onoff, g.l_linger);
	CHECK(geti(ls, SOL_SOCKET, SO_SNDBUF) == lsnd, "listener SO_SNDBUF %d, was %d", geti(ls, SOL_SOCKET, SO_SNDBUF), lsnd);
	CHECK(geti(ls, SOL_SOCKET, SO_BUF_LOCK) == 1, "listener SO_BUF_LOCK %d", geti(ls, SOL_SOCKET, SO_BUF_LOCK));
	CHECK(geti(c, SOL_SOCKET, SO_RCVBUF) == crcv, "client SO_RCVBUF %d, was %d", geti(c, SOL_SOCKET, SO_RCVBUF), crcv);
	CHECK(geti(c, SOL_SOCKET, SO_BUF_LOCK) == 2, "client SO_BUF_LOCK %d", geti(c, SOL_SOCKET, SO_BUF_LOCK));
	CHECK(geti(c, IPPROTO_TCP, TCP_NODELAY) == 1, "client TCP_NODELAY lost");
	CHECK(geti(c, IPPROTO_TCP, TCP_CORK) == 1, "client TCP_CORK lost");
	char dev[IFNAMSIZ] = "";
	l = sizeof(dev);
	CHECK(getsockopt(c, SOL_SOCKET, SO_BINDTODEVICE, dev, &l) == 0 && !strcmp(dev, "lo"),
	      "client SO_BINDTODEVICE is '%s'", dev);
	CHECK(geti(s, SOL_SOCKET, SO_KEEPALIVE) == 1 && geti(s, IPPROTO_TCP, TCP_KEEPIDLE) == 77,
	      "server end keepalive lost");
	CHECK(geti(c, SOL_SOCKET, SO_KEEPALIVE) == 0, "client SO_KEEPALIVE turned on");
	CHECK(seti(c, IPPROTO_TCP, TCP_CORK, 0) == 0 && send(c, "ping", 4, 0) == 4, "send");
	char buf[8];
	struct pollfd p = { s, POLLIN, 0 };
	CHECK(poll(&p, 1, 2000) == 1 && recv(s, buf, sizeof(buf), 0) == 4 && !memcmp(buf, "ping", 4),
	      "the connection does not carry data");
	return zdtm_finish();
}
