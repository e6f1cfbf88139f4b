"""ZDTM mm-layout tests: brk, clocks/vDSO, exe/cmdline/environ, auxv."""

import pytest

from zdtm_harness import run_zdtm

MM_PROGRAMS = [
    "mm_heap_grow",        # brk/start_brk kept, heap keeps growing
    "mm_clock",            # clock_gettime via vDSO, monotonic
    "mm_exe_cmdline_env",  # /proc/self/exe, cmdline, environ
    "mm_auxv",             # AT_PAGESZ, AT_RANDOM, /proc/self/auxv
]


@pytest.mark.parametrize("name", MM_PROGRAMS)
def test_mm(name, tmp_path, store):
    run_zdtm(name, tmp_path, store)
