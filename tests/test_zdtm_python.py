"""ZDTM interpreter tests: CPython programs across C/R."""

import pytest

from zdtm_harness import run_zdtm

PYTHON_PROGRAMS = [
    "py_compute",   # pure-Python loop: dict, list, running hash
    "py_threads",   # threads, queue, native ids
]


@pytest.mark.parametrize("name", PYTHON_PROGRAMS)
def test_python(name, tmp_path, store):
    run_zdtm(name, tmp_path, store)
