"""Crash-safe file primitives shared by every store file.

A committed file is never modified: it is written under a temporary name,
fsynced, linked to its final name (link(2) fails rather than replace an
existing file, which rename(2) would silently do), and the directory is
fsynced so the new name survives a crash."""
from __future__ import annotations

import os

os.environ.setdefault("HDF5_USE_FILE_LOCKING", "FALSE")  # shared filesystems: no flock by HDF5
import h5py  # noqa: E402,F401  (imported after the locking switch; re-exported)

from ..faults import crashpoint  # noqa: E402


_HOST = os.uname().nodename.replace("-", "_")


def temp_name(final_path: str) -> str:
    """.NAME.tmp-HOST-PID: the host tells which node may judge the writer
    dead (a PID means nothing on another node of a shared filesystem)."""
    return os.path.join(os.path.dirname(final_path), f".{os.path.basename(final_path)}.tmp-{_HOST}-{os.getpid()}")


def temp_writer_dead(name: str) -> bool:
    """Whether the temporary file `name` belongs to a dead writer of this host."""
    if not name.startswith(".") or ".tmp-" not in name:
        return False
    host, _, pid = name.rsplit(".tmp-", 1)[1].rpartition("-")
    return host == _HOST and pid.isdigit() and not os.path.exists(f"/proc/{pid}")


def temp_of_this_process(name: str) -> bool:
    """Whether `name` is a temporary file written by this very process
    (temp_name from this host and PID)."""
    return name.startswith(".") and name.endswith(f".tmp-{_HOST}-{os.getpid()}")


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


def commit_file(tmp_path: str, final_path: str, what: str = "file") -> None:
    """Make tmp_path visible as final_path, durably; never replaces a file.
    (Files are created 0600: snapshots hold other users' memory.)"""
    seal_file(tmp_path)
    publish_file(tmp_path, final_path, what)


def seal_file(tmp_path: str) -> None:
    """First half of commit_file: the temporary file's data is durable."""
    os.chmod(tmp_path, 0o600)
    fsync_path(tmp_path)


def publish_file(tmp_path: str, final_path: str, what: str = "file") -> None:
    """Second half of commit_file: link the sealed file under its name."""
    crashpoint(f"{what}-before-link")
    try:
        os.link(tmp_path, final_path)
        crashpoint(f"{what}-after-link")
    finally:
        os.unlink(tmp_path)
    fsync_dir(os.path.dirname(final_path))


def write_atomic(path: str, data: bytes, replace: bool = True, durable: bool = True) -> None:
    """Write a small file (catalog, round record) atomically; replace=True
    uses rename(2) for files that are caches meant to be replaced;
    durable=False skips the fsyncs (a cache that readers check anyway)."""
    tmp = temp_name(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with open(fd, "wb") as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        crashpoint(f"{os.path.basename(path)}-before-rename")
        if replace:
            os.rename(tmp, path)
        else:
            commit_file(tmp, path)  # removes tmp itself, linked or not
            return
    except BaseException:
        try:
            os.unlink(tmp)  # a failed write (e.g. a full disk) leaves nothing behind
        except FileNotFoundError:
            pass
        raise
    if durable:
        fsync_dir(os.path.dirname(path))


def remove_durably(path: str) -> bool:
    """Unlink a committed file and fsync its directory; False if it was gone."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    fsync_dir(os.path.dirname(path))
    return True
