/*
 * ipc_tcp_listen: listening and unconnected TCP sockets.
 *
 * An IPv4 listener on 127.0.0.1 (port chosen by the kernel, SO_REUSEADDR,
 * non-blocking) that accepted and closed a connection first (its port has a
 * TIME_WAIT socket), an IPv6 listener on ::1 with IPV6_V6ONLY, and a TCP
 * socket bound to 127.0.0.1 but neither listening nor connected.
 * After go: the addresses, ports and options are the same; both listeners
 * accept a new loopback connection that carries data; the bound socket can
 * still listen.
 */
#include "zdtm.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

static int talk(int ls, struct sockaddr *a, socklen_t alen, int family)
{
	int c = socket(family, SOCK_STREAM, 0), s;
	struct pollfd p = { ls, POLLIN, 0 };
	char buf[8];

	if (connect(c, a, alen) || poll(&p, 1, 2000) != 1 || (s = accept(ls, NULL, NULL)) < 0)
		return -1;
	if (send(c, "tcp!", 4, 0) != 4 || recv(s, buf, 8, 0) != 4 || memcmp(buf, "tcp!", 4))
		return -1;
	close(c);
	close(s);
	return 0;
}

int main(int argc, char **argv)
{
	struct sockaddr_in a4 = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) }, b4, g4;
	struct sockaddr_in6 a6 = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT }, g6;
	socklen_t l = sizeof(a4), l6 = sizeof(a6);
	int one = 1, v = 0, l4, ls6, bnd;

	zdtm_init(argc, argv);
	l4 = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	setsockopt(l4, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(l4, (void *)&a4, sizeof(a4)) || listen(l4, 7) || getsockname(l4, (void *)&a4, &l))
		return perror("ipv4 listen"), 1;
	/* accept one connection and close our side first: TIME_WAIT on the port */
	int c = socket(AF_INET, SOCK_STREAM, 0), s;
	struct pollfd p = { l4, POLLIN, 0 };
	if (connect(c, (void *)&a4, sizeof(a4)) || poll(&p, 1, 2000) != 1 || (s = accept(l4, NULL, NULL)) < 0)
		return perror("first connection"), 1;
	close(s);
	zdtm_sleep_ms(5);
	close(c);
	ls6 = socket(AF_INET6, SOCK_STREAM, 0);
	setsockopt(ls6, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(ls6, (void *)&a6, sizeof(a6)) || listen(ls6, 3) || getsockname(ls6, (void *)&a6, &l6))
		return perror("ipv6 listen"), 1;
	bnd = socket(AF_INET, SOCK_STREAM, 0);
	b4 = (struct sockaddr_in){ .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	l = sizeof(b4);
	if (bind(bnd, (void *)&b4, sizeof(b4)) || getsockname(bnd, (void *)&b4, &l))
		return perror("bind"), 1;

	zdtm_ready();
	zdtm_wait_go();

	l = sizeof(g4);
	CHECK(getsockname(l4, (void *)&g4, &l) == 0 && g4.sin_port == a4.sin_port &&
	      g4.sin_addr.s_addr == a4.sin_addr.s_addr, "ipv4 listener address changed");
	l = sizeof(v);
	CHECK(getsockopt(l4, SOL_SOCKET, SO_REUSEADDR, &v, &l) == 0 && v, "SO_REUSEADDR lost");
	CHECK(getsockopt(l4, SOL_SOCKET, SO_ACCEPTCONN, &v, &l) == 0 && v, "ipv4 socket not listening");
	CHECK(fcntl(l4, F_GETFL) & O_NONBLOCK, "ipv4 listener lost O_NONBLOCK");
	l6 = sizeof(g6);
	CHECK(getsockname(ls6, (void *)&g6, &l6) == 0 && g6.sin6_port == a6.sin6_port, "ipv6 listener port changed");
	CHECK(getsockopt(ls6, IPPROTO_IPV6, IPV6_V6ONLY, &v, &l) == 0 && v, "IPV6_V6ONLY lost");
	CHECK(talk(l4, (void *)&a4, sizeof(a4), AF_INET) == 0, "ipv4 listener: %s", strerror(errno));
	CHECK(talk(ls6, (void *)&a6, sizeof(a6), AF_INET6) == 0, "ipv6 listener: %s", strerror(errno));
	l = sizeof(g4);
	CHECK(getsockname(bnd, (void *)&g4, &l) == 0 && g4.sin_port == b4.sin_port, "bound socket port changed");
	CHECK(getsockopt(bnd, SOL_SOCKET, SO_ACCEPTCONN, &v, &l) == 0 && !v, "bound socket listens");
	CHECK(listen(bnd, 1) == 0 && talk(bnd, (void *)&b4, sizeof(b4), AF_INET) == 0, "bound socket cannot listen");
	return zdtm_finish();
}
