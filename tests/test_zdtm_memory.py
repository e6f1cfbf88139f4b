"""ZDTM memory tests: each program keeps some kind of memory across C/R."""

import pytest

from zdtm_harness import run_zdtm

MEMORY_PROGRAMS = [
    "mem_private_anon",   # private anonymous pattern + read-only area
    "mem_shared_anon",    # MAP_SHARED|MAP_ANONYMOUS, two views
    "mem_file_private",   # MAP_PRIVATE file, COWed and clean pages
    "mem_file_shared",    # MAP_SHARED regular file in STATEDIR
    "mem_file_shm",       # MAP_SHARED file on /dev/shm
    "mem_file_deleted",   # mappings of unlinked files
    "mem_prot_none",      # PROT_NONE guards and data behind PROT_NONE
    "mem_sparse",         # 1 GiB MAP_NORESERVE, 1/64 pages touched
    "mem_stack",          # deep recursion
    "mem_heap",           # malloc'd tree and list
]


@pytest.mark.parametrize("name", MEMORY_PROGRAMS)
def test_memory(name, tmp_path, store):
    run_zdtm(name, tmp_path, store)


# The same programs captured copy-on-write (small ones are otherwise read
# while frozen): their pages come from the held child, data behind PROT_NONE
# included.
@pytest.mark.parametrize("name", ["mem_private_anon", "mem_file_private", "mem_prot_none", "mem_sparse",
                                  "mem_stack", "mem_heap"])
def test_memory_cow(name, tmp_path, store):
    run_zdtm(name, tmp_path, store, dump_args=("--capture", "cow"))
