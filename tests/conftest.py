"""pytest configuration for the snapshotd test suite.

Options:
  --no-cr   run the zdtm programs through the ready/go/result protocol only,
            without dump/kill/restore (checks the test programs themselves).
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import zdtm_harness  # noqa: E402


def pytest_addoption(parser):
    parser.addoption(
        "--no-cr", action="store_true", default=False,
        help="zdtm tests: skip dump/kill/restore and only run each program's "
             "ready/go/result protocol (validates the test programs)")


def pytest_configure(config):
    zdtm_harness.NO_CR = config.getoption("--no-cr")


def pytest_unconfigure(config):
    zdtm_harness.cleanup_build_dir()


@pytest.fixture(autouse=True)
def _kill_started_processes():
    """Whatever happens, no test leaves a process it started behind."""
    zdtm_harness.STARTED_PIDS.clear()
    yield
    zdtm_harness.kill_started()


@pytest.fixture
def store(tmp_path):
    """A fresh, empty snapshot store for this test."""
    path = tmp_path / "store"
    path.mkdir()
    return path


@pytest.fixture
def no_cr(request):
    return request.config.getoption("--no-cr")
