/*
 * ipc_unix_named: named unix sockets.
 *
 * A stream listener bound to the relative name "lsock" (in STATEDIR, our
 * cwd), with one accepted connection that has "hello" queued each way; an
 * abstract-namespace seqpacket listener; a datagram socket bound to
 * STATEDIR/dsock with two datagrams queued from an unnamed sender, and a
 * datagram socket connect()ed to it.
 * After go: names are the same (getsockname/getpeername); the queued data
 * reads back; a new client connects to "lsock" and the listener accepts it
 * and they talk; the abstract listener accepts too; the connected datagram
 * socket sends to dsock.
 */
#include "zdtm.h"
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>

static socklen_t addr_of(struct sockaddr_un *a, const char *name, int abstract)
{
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	if (abstract) {
		memcpy(a->sun_path + 1, name, strlen(name));
		return offsetof(struct sockaddr_un, sun_path) + 1 + strlen(name);
	}
	snprintf(a->sun_path, sizeof(a->sun_path), "%s", name);
	return sizeof(*a);
}

int main(int argc, char **argv)
{
	struct sockaddr_un a, got;
	socklen_t alen, glen;
	char dpath[PATH_MAX], abs_name[64], buf[64];
	int ls, cl, ac, as, ds, dc, snd;

	zdtm_init(argc, argv);
	zdtm_path("dsock", dpath, sizeof(dpath));
	snprintf(abs_name, sizeof(abs_name), "snapshotd-zdtm-%d", getpid());
	ls = socket(AF_UNIX, SOCK_STREAM, 0);
	alen = addr_of(&a, "lsock", 0);
	if (ls < 0 || bind(ls, (void *)&a, alen) || listen(ls, 5))
		return perror("listen lsock"), 1;
	cl = socket(AF_UNIX, SOCK_STREAM, 0);
	if (connect(cl, (void *)&a, alen) || (ac = accept(ls, NULL, NULL)) < 0)
		return perror("connect lsock"), 1;
	send(cl, "hello", 5, 0);
	send(ac, "HELLO", 5, 0);
	as = socket(AF_UNIX, SOCK_SEQPACKET, 0);
	alen = addr_of(&a, abs_name, 1);
	if (as < 0 || bind(as, (void *)&a, alen) || listen(as, 2))
		return perror("listen abstract"), 1;
	ds = socket(AF_UNIX, SOCK_DGRAM, 0);
	alen = addr_of(&a, dpath, 0);
	if (ds < 0 || bind(ds, (void *)&a, alen))
		return perror("bind dsock"), 1;
	snd = socket(AF_UNIX, SOCK_DGRAM, 0);
	sendto(snd, "one", 3, 0, (void *)&a, alen);
	sendto(snd, "second", 6, 0, (void *)&a, alen);
	close(snd);
	dc = socket(AF_UNIX, SOCK_DGRAM, 0);
	if (connect(dc, (void *)&a, alen))
		return perror("connect dsock"), 1;

	zdtm_ready();
	zdtm_wait_go();

	glen = sizeof(got);
	CHECK(getsockname(ac, (void *)&got, &glen) == 0 && !strcmp(got.sun_path, "lsock"),
	      "accepted socket name %s", got.sun_path);
	glen = sizeof(got);
	CHECK(getpeername(cl, (void *)&got, &glen) == 0 && !strcmp(got.sun_path, "lsock"), "client peer name %s",
	      got.sun_path);
	glen = sizeof(got);
	CHECK(getsockname(ds, (void *)&got, &glen) == 0 && !strcmp(got.sun_path, dpath), "dgram name %s",
	      got.sun_path);
	CHECK(recv(ac, buf, sizeof(buf), MSG_DONTWAIT) == 5 && !memcmp(buf, "hello", 5), "accepted: queued data");
	CHECK(recv(cl, buf, sizeof(buf), MSG_DONTWAIT) == 5 && !memcmp(buf, "HELLO", 5), "client: queued data");
	CHECK(recv(ds, buf, sizeof(buf), MSG_DONTWAIT) == 3 && !memcmp(buf, "one", 3), "dgram: first message");
	CHECK(recv(ds, buf, sizeof(buf), MSG_DONTWAIT) == 6 && !memcmp(buf, "second", 6), "dgram: second message");
	CHECK(recv(ds, buf, sizeof(buf), MSG_DONTWAIT) == -1 && errno == EAGAIN, "dgram: extra message");

	int c2 = socket(AF_UNIX, SOCK_STREAM, 0), a2;
	alen = addr_of(&a, "lsock", 0);
	CHECK(connect(c2, (void *)&a, alen) == 0, "connect to lsock after restore: %s", strerror(errno));
	a2 = accept(ls, NULL, NULL);
	CHECK(a2 >= 0 && send(c2, "abc", 3, 0) == 3 && recv(a2, buf, 3, 0) == 3 && !memcmp(buf, "abc", 3),
	      "new connection on lsock does not talk");
	int c3 = socket(AF_UNIX, SOCK_SEQPACKET, 0);
	alen = addr_of(&a, abs_name, 1);
	CHECK(connect(c3, (void *)&a, alen) == 0 && accept(as, NULL, NULL) >= 0, "abstract listener: %s",
	      strerror(errno));
	CHECK(send(dc, "via connect", 11, 0) == 11 && recv(ds, buf, sizeof(buf), 0) == 11, "connected dgram");
	return zdtm_finish();
}
