"""ZDTM thread and register tests."""

import pytest

from zdtm_harness import run_zdtm

THREAD_PROGRAMS = [
    "thread_gettid",        # 4 computing threads keep TIDs and results
    "regs_vector",          # live zmm/k (or ymm) registers in an asm loop
    "regs_fpu",             # MXCSR, x87 control word and x87 stack
    "thread_tls",           # __thread variables and fs base per thread
    "thread_sigmask",       # per-thread blocked signal masks
    "thread_rseq",          # rseq registration, sched_getcpu vs stat
    "thread_robust_mutex",  # robust futex list: EOWNERDEAD after owner exits
    "thread_pending_signals",  # blocked pending signals, shared and per-thread
]


@pytest.mark.parametrize("name", THREAD_PROGRAMS)
def test_threads(name, tmp_path, store):
    run_zdtm(name, tmp_path, store)
