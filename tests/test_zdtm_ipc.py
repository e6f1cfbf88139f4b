"""ZDTM tests of fd kinds beyond files: event descriptors, unix sockets,
shared memory; and the refusal of fds snapshotd cannot restore exactly."""

import pytest

from zdtm_harness import run_zdtm

IPC_PROGRAMS = [
    "ipc_eventfd",        # counters, EFD_SEMAPHORE, O_NONBLOCK, 64-bit value
    "ipc_timerfd",        # armed timers fire with the same interval; unread ticks
    "ipc_signalfd",       # mask kept; signals read after restore
    "ipc_epoll",          # watched set with data/ET, DEL by fd number
    "ipc_inotify",        # watches with their wd numbers fire after restore
]


@pytest.mark.parametrize("name", IPC_PROGRAMS)
def test_ipc(name, tmp_path, store):
    run_zdtm(name, tmp_path, store)
