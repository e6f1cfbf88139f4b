/*
 * net_tcp_two_hosts: an established TCP connection to another host (a peer
 * program in another network namespace, reached over a veth pair), with
 * unread bytes queued on both ends.
 *
 * STATEDIR/peer holds "ADDRESS PORT".  This program sends 100000 bytes that
 * the peer reads and checks, then more that the peer leaves unread, until
 * the peer's window is full and its own send queue holds bytes too
 * (SIOCOUTQ > 0: the peer's receive buffer is small); the count goes to
 * STATEDIR/tail.  The peer sends 50000 that this program leaves unread.
 * Ready once the 50000 bytes are here.  The
 * harness may make the peer send 4096 more bytes while this program is
 * away (STATEDIR/gap).  After go: the 50000 (+4096) bytes read back in order,
 * then 1 MB each way, then a clean shutdown each way.  The peer checks its
 * side (tests/progs/tcp_peer.py writes STATEDIR/peer_result).
 */
#include "zdtm.h"
#include <arpa/inet.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#define FIRST 100000
#define QUEUED 50000
#define GAP 4096
#define MORE (1 << 20)

static char buf[MORE], want[MORE];

static int read_all(int fd, char *p, size_t n)
{
	return zdtm_recv_all(fd, p, n, 15000);
}

static int send_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t r = send(fd, p, n, 0);

		if (r <= 0)
			return -1;
		p += r;
		n -= r;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	char path[PATH_MAX], line[128], ip[64];
	int s, port, v;

	zdtm_init(argc, argv);
	if (zdtm_read(zdtm_path("peer", path, sizeof(path)), line, sizeof(line)) <= 0 ||
	    sscanf(line, "%63s %d", ip, &port) != 2)
		return fprintf(stderr, "no peer file\n"), 1;
	inet_pton(AF_INET, ip, &a.sin_addr);
	a.sin_port = htons(port);
	s = socket(AF_INET, SOCK_STREAM, 0);
	if (connect(s, (void *)&a, sizeof(a)))
		return perror("connect"), 1;
	for (int i = 0; i < MORE; i++)
		want[i] = (char)zdtm_mix(i);
	if (send_all(s, want, FIRST))
		return perror("send"), 1;
	for (int i = 0; i < 2000; i++) { /* the peer's bytes here */
		int inq = 0;

		ioctl(s, SIOCINQ, &inq);
		if (inq >= QUEUED)
			break;
		zdtm_sleep_ms(5);
	}
	ioctl(s, SIOCINQ, &v);
	if (v != QUEUED)
		return fprintf(stderr, "%d bytes queued, not %d\n", v, QUEUED), 1;
	/* fill the peer's window and our send buffer */
	size_t tail = 0;
	for (int idle = 0; idle < 20; ) {
		ssize_t r = send(s, want + FIRST + tail, MORE - FIRST - tail, MSG_DONTWAIT);

		if (r > 0) {
			tail += r;
			idle = 0;
		} else {
			idle++;
			zdtm_sleep_ms(5);
		}
	}
	ioctl(s, SIOCOUTQ, &v);
	if (v <= 0)
		return fprintf(stderr, "nothing in the send queue\n"), 1;
	snprintf(line, sizeof(line), "%zu\n", tail);
	zdtm_write_file("tail", line);
	fprintf(stderr, "tail %zu bytes, %d not acknowledged\n", tail, v);

	zdtm_ready();
	zdtm_wait_go();

	int gap = access(zdtm_path("gap", path, sizeof(path)), F_OK) == 0 ? GAP : 0;

	for (int i = 0; i < QUEUED + gap; i++)
		want[i] = (char)zdtm_mix(i + 11);
	CHECK(read_all(s, buf, QUEUED + gap) == 0, "the peer's queued bytes did not come");
	CHECK(!memcmp(buf, want, QUEUED + gap), "the peer's queued bytes differ");
	for (int i = 0; i < MORE; i++)
		want[i] = (char)zdtm_mix(i + 23);
	CHECK(send_all(s, want, MORE) == 0, "sending 1 MB after restore failed");
	for (int i = 0; i < MORE; i++)
		want[i] = (char)zdtm_mix(i + 37);
	CHECK(read_all(s, buf, MORE) == 0 && !memcmp(buf, want, MORE), "1 MB from the peer after restore differs");
	shutdown(s, SHUT_WR);
	struct pollfd pf = { s, POLLIN, 0 };
	CHECK(poll(&pf, 1, 5000) == 1 && recv(s, buf, 1, 0) == 0, "no end of file from the peer");
	close(s);
	return zdtm_finish();
}
