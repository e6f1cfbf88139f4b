/*
 * ipc_unsupported: a process holding fds snapshotd cannot restore exactly.
 *
 * A unix stream pair with "queued" waiting in it and an eventfd at 7 come
 * first; then fd 20 is a netlink (NETLINK_ROUTE) socket, fd 21 an io_uring
 * (when the kernel allows one), fd 22 a TCP socket listening on loopback.
 * The test expects the dump to be refused with one line naming fd 20 and
 * the process to run on unchanged: after go the queued data, the eventfd
 * counter, the netlink socket (it answers a RTM_GETLINK dump) and the TCP
 * listener (accepts a loopback connection) all still work.
 */
#include "zdtm.h"
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <netinet/in.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

int main(int argc, char **argv)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t slen = sizeof(sin);
	char buf[8192];
	uint64_t v;
	int sv[2], e, nl, ring, tcp, c;

	zdtm_init(argc, argv);
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) || send(sv[0], "queued", 6, 0) != 6)
		return perror("socketpair"), 1;
	e = eventfd(7, 0);
	nl = socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE);
	tcp = socket(AF_INET, SOCK_STREAM, 0);
	if (e < 0 || nl < 0 || tcp < 0 || dup2(nl, 20) != 20 || dup2(tcp, 22) != 22)
		return perror("setup"), 1;
	close(nl);
	close(tcp);
	ring = syscall(425 /* io_uring_setup */, 4, buf);
	if (ring >= 0)
		dup2(ring, 21), close(ring);
	memset(buf, 0, 200);
	if (bind(22, (void *)&sin, sizeof(sin)) || listen(22, 1) || getsockname(22, (void *)&sin, &slen))
		return perror("tcp"), 1;

	zdtm_ready();
	zdtm_wait_go();

	CHECK(recv(sv[1], buf, sizeof(buf), MSG_DONTWAIT) == 6 && !memcmp(buf, "queued", 6), "unix queue changed");
	CHECK(read(e, &v, 8) == 8 && v == 7, "eventfd counter %llu", (unsigned long long)v);
	struct {
		struct nlmsghdr h;
		struct rtgenmsg g;
	} req = { { sizeof(req), RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, 1, 0 }, { AF_UNSPEC } };
	CHECK(send(20, &req, sizeof(req), 0) == sizeof(req) && recv(20, buf, sizeof(buf), 0) > 0,
	      "netlink socket does not answer");
	c = socket(AF_INET, SOCK_STREAM, 0);
	CHECK(connect(c, (void *)&sin, sizeof(sin)) == 0 && accept(22, NULL, NULL) >= 0, "tcp listener: %s",
	      strerror(errno));
	return zdtm_finish();
}
