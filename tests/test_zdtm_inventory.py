"""Every zdtm program is run by some test, and has a header comment."""

import pytest

import test_incremental
import test_restore_twice
import test_zdtm_files
import test_zdtm_ipc
import test_zdtm_memory
import test_zdtm_mm
import test_zdtm_netns
import test_zdtm_python
import test_zdtm_signals
import test_zdtm_threads
import test_zdtm_tree
from zdtm_harness import ZDTM_DIR, program_command

LISTED = set(
    test_zdtm_memory.MEMORY_PROGRAMS + test_zdtm_mm.MM_PROGRAMS
    + test_zdtm_threads.THREAD_PROGRAMS + test_zdtm_signals.PROCESS_PROGRAMS
    + test_zdtm_files.FILE_PROGRAMS + test_zdtm_python.PYTHON_PROGRAMS
    + test_zdtm_ipc.IPC_PROGRAMS + test_zdtm_ipc.OTHER_PROGRAMS
    + test_zdtm_tree.TREE_PROGRAMS + test_incremental.INCR_PROGRAMS + test_zdtm_netns.NET_PROGRAMS)

PROGRAMS = sorted(p.stem for p in ZDTM_DIR.iterdir()
                  if p.suffix in (".c", ".py") and p.stem != "zdtmlib")


def test_every_program_is_listed():
    assert set(PROGRAMS) - LISTED == set()
    assert LISTED - set(PROGRAMS) == set()
    assert set(test_restore_twice.REPEATED) <= LISTED


@pytest.mark.parametrize("name", PROGRAMS)
def test_program_builds_and_is_documented(name):
    src = next(ZDTM_DIR.glob(name + ".*"))
    head = src.read_text()[:400]
    assert head.startswith(("/*\n * " + name + ":", '"""' + name + ":")), \
        f"{src.name} lacks a header comment naming it"
    program_command(name)  # compiles C programs
