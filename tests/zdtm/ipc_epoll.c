/*
 * ipc_epoll: an epoll instance watching two fds (an eventfd, level
 * triggered, data 0x1111; a disarmed timerfd, edge triggered, data
 * 0x2222) and a second epoll with nothing in it.
 *
 * After go: nothing is ready; writing to the eventfd makes epoll_wait report
 * exactly data 0x1111 with EPOLLIN; then arming the timer for 10 ms reports 0x2222
 * (edge) once; EPOLL_CTL_DEL of both watched fds works (the items are keyed
 * by the same fd numbers); the empty epoll reports nothing.
 */
#include "zdtm.h"
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>

int main(int argc, char **argv)
{
	struct epoll_event ev[4];
	uint64_t one = 1;
	int ep, ep2, efd, p[1], n;
	struct itimerspec ten = { { 0, 0 }, { 0, 10000000 } };

	zdtm_init(argc, argv);
	ep = epoll_create1(EPOLL_CLOEXEC);
	ep2 = epoll_create1(0);
	efd = eventfd(0, EFD_NONBLOCK);
	if (ep < 0 || ep2 < 0 || efd < 0 || (p[0] = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK)) < 0)
		return perror("setup"), 1;
	ev[0] = (struct epoll_event){ .events = EPOLLIN, .data.u64 = 0x1111 };
	ev[1] = (struct epoll_event){ .events = EPOLLIN | EPOLLET, .data.u64 = 0x2222 };
	if (epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev[0]) || epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev[1]))
		return perror("epoll_ctl"), 1;

	zdtm_ready();
	zdtm_wait_go();

	CHECK(fcntl(ep, F_GETFD) & FD_CLOEXEC, "epoll lost FD_CLOEXEC");
	n = epoll_wait(ep, ev, 4, 0);
	CHECK(n == 0, "%d ready before any event", n);
	write(efd, &one, 8);
	n = epoll_wait(ep, ev, 4, 100);
	CHECK(n == 1 && ev[0].data.u64 == 0x1111 && (ev[0].events & EPOLLIN), "eventfd: n=%d data %llx", n,
	      (unsigned long long)ev[0].data.u64);
	read(efd, &one, 8);
	timerfd_settime(p[0], 0, &ten, NULL);
	n = epoll_wait(ep, ev, 4, 100);
	CHECK(n == 1 && ev[0].data.u64 == 0x2222, "timerfd: n=%d data %llx", n, (unsigned long long)ev[0].data.u64);
	n = epoll_wait(ep, ev, 4, 0);
	CHECK(n == 0, "edge-triggered timerfd reported again (n=%d)", n);
	CHECK(epoll_ctl(ep, EPOLL_CTL_DEL, efd, NULL) == 0, "DEL eventfd: %s", strerror(errno));
	CHECK(epoll_ctl(ep, EPOLL_CTL_DEL, p[0], NULL) == 0, "DEL timerfd: %s", strerror(errno));
	CHECK(epoll_wait(ep2, ev, 4, 0) == 0, "empty epoll reports something");
	return zdtm_finish();
}
