"""ZDTM signal and process-state tests."""

import pytest

from zdtm_harness import run_zdtm

PROCESS_PROGRAMS = [
    "proc_sched",         # CPU affinity per thread, nice, SCHED_BATCH/IDLE
    "sig_handlers",   # SA_SIGINFO/SA_RESTART/SA_NODEFER/SA_RESETHAND, sa_mask
    "sig_ignored",    # SIG_IGN dispositions incl. SIGCHLD auto-reap
    "sig_altstack",   # sigaltstack per thread, SA_ONSTACK
    "sig_itimer",     # ITIMER_REAL keeps firing; VIRTUAL/PROF armed
    "proc_rlimits",   # lowered NOFILE/CORE/STACK limits
    "proc_cwd",       # cwd in a subdirectory of STATEDIR
    "proc_umask",     # umask 027
    "proc_comm",      # process and thread names
    "proc_creds",     # uid/gid 65534 with saved uid 0, groups, caps
    "proc_session",   # session and process group ids
]


@pytest.mark.parametrize("name", PROCESS_PROGRAMS)
def test_process_state(name, tmp_path, store):
    run_zdtm(name, tmp_path, store)
