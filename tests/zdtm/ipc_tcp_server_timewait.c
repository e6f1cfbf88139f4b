/*
 * ipc_tcp_server_timewait: a TCP server without SO_REUSEADDR, with a
 * connection accepted on it, both ends in this process.
 *
 * The accepted socket has the lower fd, so when the process is killed its
 * end closes first and TIME_WAIT then holds the server's port: the restored
 * listener must get its port back anyway (a rollback kills and restores on
 * the same node).  After go: same port, SO_REUSEADDR still off, the old
 * connection still carries data both ways, and a new client is accepted.
 */
#include "zdtm.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

static int echo(int from, int to, const char *msg)
{
	char buf[64];
	size_t n = strlen(msg);
	if (send(from, msg, n, 0) != (ssize_t)n)
		return -1;
	struct pollfd p = { to, POLLIN, 0 };
	if (poll(&p, 1, 2000) != 1 || recv(to, buf, sizeof(buf), 0) != (ssize_t)n || memcmp(buf, msg, n))
		return -1;
	return 0;
}

int main(int argc, char **argv)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) }, g;
	socklen_t l = sizeof(a);
	int v = 1;

	zdtm_init(argc, argv);
	int ls = socket(AF_INET, SOCK_STREAM, 0);
	if (bind(ls, (void *)&a, sizeof(a)) || listen(ls, 4) || getsockname(ls, (void *)&a, &l))
		return perror("listen"), 1;
	int c = socket(AF_INET, SOCK_STREAM, 0), s;
	if (connect(c, (void *)&a, sizeof(a)) || (s = accept(ls, NULL, NULL)) < 0)
		return perror("connect"), 1;
	/* the accepted end below the client's: closed first when we are killed */
	if (dup2(s, 10) < 0 || dup2(c, 11) < 0 || dup2(ls, 12) < 0)
		return perror("dup2"), 1;
	close(s), close(c), close(ls);
	s = 10, c = 11, ls = 12;

	zdtm_ready();
	zdtm_wait_go();

	l = sizeof(g);
	CHECK(getsockname(ls, (void *)&g, &l) == 0 && g.sin_port == a.sin_port, "the listener's port changed");
	l = sizeof(v);
	CHECK(getsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &v, &l) == 0 && v == 0, "SO_REUSEADDR turned on");
	CHECK(getsockopt(ls, SOL_SOCKET, SO_ACCEPTCONN, &v, &l) == 0 && v, "not listening");
	CHECK(echo(c, s, "to server") == 0, "client -> server: %s", strerror(errno));
	CHECK(echo(s, c, "to client") == 0, "server -> client: %s", strerror(errno));
	int c2 = socket(AF_INET, SOCK_STREAM, 0), s2 = -1;
	struct pollfd p = { ls, POLLIN, 0 };
	CHECK(connect(c2, (void *)&a, sizeof(a)) == 0 && poll(&p, 1, 2000) == 1 &&
	      (s2 = accept(ls, NULL, NULL)) >= 0 && echo(c2, s2, "new") == 0,
	      "a new client was not served: %s", strerror(errno));
	return zdtm_finish();
}
