/*
 * ipc_signalfd: a signalfd for SIGUSR1|SIGUSR2 (blocked), non-blocking.
 *
 * After go: the mask of the signalfd (fdinfo sigmask) is the same, nothing
 * is readable yet, and a SIGUSR2 sent to ourselves (and a SIGUSR1 queued
 * with a value) are read from it with their numbers and value.
 */
#include "zdtm.h"
#include <signal.h>
#include <sys/signalfd.h>

int main(int argc, char **argv)
{
	struct signalfd_siginfo si;
	char path[64], mask[64];
	sigset_t set;
	int fd;

	zdtm_init(argc, argv);
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGUSR2);
	sigprocmask(SIG_BLOCK, &set, NULL);
	fd = signalfd(-1, &set, SFD_NONBLOCK);
	if (fd < 0)
		return perror("signalfd"), 1;

	zdtm_ready();
	zdtm_wait_go();

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	CHECK(zdtm_status_field(path, "sigmask:", mask, sizeof(mask)) == 0 &&
	      !strcmp(mask, "0000000000000a00"), "sigmask %s", mask);
	CHECK(read(fd, &si, sizeof(si)) == -1 && errno == EAGAIN, "signal readable before any was sent");
	kill(getpid(), SIGUSR2);
	sigqueue(getpid(), SIGUSR1, (union sigval){ .sival_int = 1234 });
	CHECK(read(fd, &si, sizeof(si)) == sizeof(si) && si.ssi_signo == SIGUSR1 && si.ssi_int == 1234,
	      "first read: signal %u value %d", si.ssi_signo, si.ssi_int);
	CHECK(read(fd, &si, sizeof(si)) == sizeof(si) && si.ssi_signo == SIGUSR2, "second read: signal %u",
	      si.ssi_signo);
	return zdtm_finish();
}
