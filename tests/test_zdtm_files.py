"""ZDTM file descriptor tests."""

import pytest

from zdtm_harness import run_zdtm

FILE_PROGRAMS = [
    "fd_numbers",         # high fd numbers, holes, links
    "fd_offsets",         # file offsets, incl. past EOF
    "fd_flags",           # O_APPEND, O_NONBLOCK, access modes, FD_CLOEXEC
    "fd_shared_offset",   # dup()ed fds share offset and flags
    "fd_unlinked",        # open files that were unlinked
    "fd_dev_null_zero",   # /dev/null, /dev/zero, /dev/urandom
    "fd_write_log",       # a log file continues with lines N+1...
    "file_locks",         # POSIX (ranges, a child's, a deleted file's), OFD and flock locks
]


@pytest.mark.parametrize("name", FILE_PROGRAMS)
def test_files(name, tmp_path, store):
    run_zdtm(name, tmp_path, store)
