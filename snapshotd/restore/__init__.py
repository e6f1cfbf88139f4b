"""Restore: rebuild a process from an Image, syscall by syscall, in a stub
process that has the original PID (engine/csrc/spawn.c explains the stub;
tree.py creates the stubs of a whole tree and drives process.py's Restorer
for each live process, then resumes them all).

Order (each step depends on the ones before; docs/INTERNALS.md says why):
  1. the stub with the dumped PID, stopped at an int3 (tree.py);
  2. map a scratch page (code + syscall arguments) where the image has nothing;
  3. unmap the stub, move vvar+vvar_vclock+vdso together to the dumped address
     (glibc cached the vDSO address; it must not move);
  4. map every mapping (files passed in from our side with pidfd_getfd), fill
     pages with process_vm_writev, then set the final protections (private
     anonymous memory a parent premapped before forking its children is
     kept, and only the pages that differ are written: cow.py);
  5. PR_SET_MM_MAP (brk, arg/env, auxv, exe link), signal handlers, itimers,
     cwd, umask, then the file descriptors;
  6. threads: clone3(set_tid=[TID]) injected in the main thread; per thread
     set_tid_address, robust list, rseq, name, sigaltstack, pending signals;
  7. rlimits (after fds and threads, which a lowered limit would refuse),
     credentials last (thread by thread: setresuid acts on one thread);
  8. unmap the scratch page from inside, set registers, xstate and signal masks;
  9. resume(): detach, once every process of the tree is built: the process
     runs on from where it was dumped.
Any failure kills the whole tree (PTRACE_O_EXITKILL also covers our own death).
"""
from __future__ import annotations

import time

from ..image import Image, from_dict
from ..kernel import netns, privilege
from ..storage.snapshot import SnapshotReader
from .process import RestoreError, RestoreStats
from .tree import TreeRestorer

__all__ = ["restore", "RestoreError", "RestoreStats"]


def restore(reader: SnapshotReader, pidns: bool | None = None,
            owner_uid: int = 0) -> tuple[int, RestoreStats, list[str]]:
    """Recreate the whole tree of the snapshot; returns (root PID, stats,
    notes).  stats.pids lists every restored PID, root first.  pidns: True
    forces a new PID namespace, False fails when a PID is taken, None uses
    one only when a PID is taken (stats.outside_pids: the PIDs seen from
    outside it).  owner_uid: restoring for that (non-root) user: an image
    that would give any process more than the user has is refused
    (privilege.py), whatever the image says."""
    t0 = time.monotonic()
    img: Image = from_dict(reader.image())
    if owner_uid:
        why = privilege.image_excess(img.processes, owner_uid)
        if why:
            raise RestoreError(f"refused: restoring {reader.id} would give uid {owner_uid} privileges it does not "
                               f"have ({why})")
    stats = RestoreStats()
    tr = TreeRestorer(img, reader, stats, pidns=pidns)
    try:
        with netns.entered(img.netns, tr.shared.notes):  # the tree's network namespace
            pid = tr.run()
            netns.unlock(img.netns)  # the dump's TCP peer lock: the tree runs again
    except netns.NetnsError as e:
        raise RestoreError(f"cannot restore: {e}") from None
    stats.wall_s = time.monotonic() - t0
    return pid, stats, tr.shared.notes
