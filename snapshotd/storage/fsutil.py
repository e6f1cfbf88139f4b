"""Crash-safe file primitives shared by every store file.

A committed file is never modified: it is written under a temporary name,
fsynced, linked to its final name (link(2) fails rather than replace an
existing file, which rename(2) would silently do), and the directory is
fsynced so the new name survives a crash."""
from __future__ import annotations

import os

os.environ.setdefault("HDF5_USE_FILE_LOCKING", "FALSE")  # shared filesystems: no flock by HDF5
import h5py  # noqa: E402,F401  (imported after the locking switch; re-exported)


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit_file(tmp_path: str, final_path: str) -> None:
    """Make tmp_path visible as final_path, durably; never replaces a file."""
    fsync_path(tmp_path)
    try:
        os.link(tmp_path, final_path)
    finally:
        os.unlink(tmp_path)
    fsync_dir(os.path.dirname(final_path))


def write_atomic(path: str, data: bytes, replace: bool = True) -> None:
    """Write a small file (catalog, round record) atomically; replace=True
    uses rename(2) for files that are caches meant to be replaced."""
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    if replace:
        os.rename(tmp, path)
        fsync_dir(os.path.dirname(path))
    else:
        commit_file(tmp, path)


def remove_durably(path: str) -> bool:
    """Unlink a committed file and fsync its directory; False if it was gone."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    fsync_dir(os.path.dirname(path))
    return True
