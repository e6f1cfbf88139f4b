/*
 * ipc_tcp_loopback_v6: loopback TCP connections with both ends in this
 * process over IPv6 (::1) and over a dual-stack listener reached by IPv4
 * (the server end sees ::ffff:127.0.0.1, the client 127.0.0.1), each with
 * unread bytes queued.  After go: the queued bytes, then more data both
 * ways, on both connections.
 */
#include "zdtm.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

static int xfer(int from, int to, const char *msg)
{
	char buf[64];
	size_t n = strlen(msg);
	if (send(from, msg, n, 0) != (ssize_t)n)
		return -1;
	struct pollfd p = { to, POLLIN, 0 };
	if (poll(&p, 1, 2000) != 1 || recv(to, buf, n, MSG_WAITALL) != (ssize_t)n || memcmp(buf, msg, n))
		return -1;
	return 0;
}

int main(int argc, char **argv)
{
	struct sockaddr_in6 a6 = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_ANY_INIT };
	socklen_t l = sizeof(a6);
	int zero = 0;
	zdtm_init(argc, argv);
	int ls = socket(AF_INET6, SOCK_STREAM, 0);
	setsockopt(ls, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
	if (bind(ls, (void *)&a6, sizeof(a6)) || listen(ls, 4) || getsockname(ls, (void *)&a6, &l))
		return perror("listen"), 1;
	struct sockaddr_in6 to6 = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT, .sin6_port = a6.sin6_port };
	struct sockaddr_in to4 = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK), .sin_port = a6.sin6_port };
	int c6 = socket(AF_INET6, SOCK_STREAM, 0), c4 = socket(AF_INET, SOCK_STREAM, 0), s6, s4;
	if (connect(c6, (void *)&to6, sizeof(to6)) || (s6 = accept(ls, NULL, NULL)) < 0 ||
	    connect(c4, (void *)&to4, sizeof(to4)) || (s4 = accept(ls, NULL, NULL)) < 0)
		return perror("connect"), 1;
	if (send(c6, "six", 3, 0) != 3 || send(c4, "four", 4, 0) != 4)
		return perror("send"), 1;

	zdtm_ready();
	zdtm_wait_go();

	char buf[8];
	CHECK(recv(s6, buf, 3, MSG_WAITALL) == 3 && !memcmp(buf, "six", 3), "IPv6: the queued bytes");
	CHECK(recv(s4, buf, 4, MSG_WAITALL) == 4 && !memcmp(buf, "four", 4), "v4-mapped: the queued bytes");
	CHECK(xfer(c6, s6, "v6 up") == 0 && xfer(s6, c6, "v6 down") == 0, "IPv6 connection: %s", strerror(errno));
	CHECK(xfer(c4, s4, "v4 up") == 0 && xfer(s4, c4, "v4 down") == 0, "v4-mapped connection: %s", strerror(errno));
	return zdtm_finish();
}
