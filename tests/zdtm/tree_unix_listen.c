/*
 * tree_unix_listen: a server child on a named unix socket and a client child.
 *
 * The parent binds and listens on "srv.sock" (in the state directory) and
 * forks a server child (the listener is inherited: one description in both)
 * and a client child.  Before ready the client connects, the server accepts,
 * and each sends a message the other has not read.  After go the client reads
 * the server's message and connects again (the restored listener must accept
 * it), the server reads the first message, accepts, and answers on the new
 * connection; the parent checks that its copy of the listener still listens.
 */
#include "zdtm.h"
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

static const char *SRV_MSG = "hello from the server", *CLI_MSG = "hello from the client";

static int read_msg(int fd, const char *want)
{
	char b[128];
	int n = strlen(want), got = 0;
	while (got < n) {
		ssize_t r = read(fd, b + got, n - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		got += r;
	}
	return memcmp(b, want, n) ? -1 : 0;
}

static int dial(const struct sockaddr_un *a)
{
	int s = socket(AF_UNIX, SOCK_STREAM, 0);
	if (s < 0 || connect(s, (const struct sockaddr *)a, sizeof(*a)))
		return -1;
	return s;
}

int main(int argc, char **argv)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	int sync[2], st = 0, acc = 0;
	socklen_t len = sizeof(acc);
	char c;

	zdtm_init(argc, argv);
	strcpy(a.sun_path, "srv.sock");
	unlink(a.sun_path);
	int l = socket(AF_UNIX, SOCK_STREAM, 0);
	if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 4) || pipe(sync))
		return 2;
	pid_t server = fork();
	if (server == 0) {
		int c1 = accept(l, NULL, NULL), bad = 0;
		if (c1 < 0 || write(c1, SRV_MSG, strlen(SRV_MSG)) < 0)
			_exit(3);
		if (write(sync[1], "s", 1) != 1)
			_exit(3);
		zdtm_wait_go();
		bad |= read_msg(c1, CLI_MSG) ? 1 : 0;
		int c2 = accept(l, NULL, NULL);
		bad |= c2 < 0 ? 2 : 0;
		bad |= read_msg(c2, "again") ? 4 : 0;
		bad |= write(c2, "ok", 2) != 2 ? 8 : 0;
		_exit(bad);
	}
	pid_t client = fork();
	if (client == 0) {
		int c1 = dial(&a), bad = 0;
		if (c1 < 0 || write(c1, CLI_MSG, strlen(CLI_MSG)) < 0)
			_exit(3);
		close(l);
		if (write(sync[1], "c", 1) != 1)
			_exit(3);
		zdtm_wait_go();
		bad |= read_msg(c1, SRV_MSG) ? 1 : 0;
		int c2 = dial(&a);
		bad |= c2 < 0 ? 2 : 0;
		bad |= write(c2, "again", 5) != 5 ? 4 : 0;
		bad |= read_msg(c2, "ok") ? 8 : 0;
		_exit(bad);
	}
	/* both children wrote their message; the server accepted */
	for (int i = 0; i < 2; i++)
		CHECK(read(sync[0], &c, 1) == 1, "children did not start");
	zdtm_sleep_ms(20); /* the client's and server's messages are in flight no more */
	zdtm_ready();
	zdtm_wait_go();

	CHECK(getsockopt(l, SOL_SOCKET, SO_ACCEPTCONN, &acc, &len) == 0 && acc == 1, "the listener no longer listens");
	CHECK(waitpid(server, &st, 0) == server, "waitpid: %m");
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "server reported %#x", st);
	CHECK(waitpid(client, &st, 0) == client, "waitpid: %m");
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "client reported %#x", st);
	unlink(a.sun_path);
	return zdtm_finish();
}
