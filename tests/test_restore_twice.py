"""Repeated C/R: dump -> kill -> restore three times in a row (a restored
process must itself be dumpable and restorable)."""

import pytest

from zdtm_harness import run_zdtm

REPEATED = [
    "thread_gettid",   # threads + register computations
    "mem_private_anon",
    "fd_write_log",    # file offset keeps moving between cycles
    "py_compute",      # interpreter
    "ipc_unix_pair",   # requeued socket data is dumped again
    "ipc_epoll",       # watches re-added by restore are dumped again
    "ipc_inotify",     # restored watches (and their wd numbers) dumped again
    "ipc_tcp_established",  # a repaired connection is dumped and repaired again
]


@pytest.mark.parametrize("name", REPEATED)
def test_restore_three_times(name, tmp_path, store):
    run_zdtm(name, tmp_path, store, cycles=3)
