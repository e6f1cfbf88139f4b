"""The thin layer over the kernel: syscall numbers and constants (syscalls),
libc (libc), the C engine's face (engine), code run inside another process
(inject), /proc readers (procfs), feature probes (probes), fs credentials,
network namespaces, privilege checks.  It imports nothing of snapshotd but
its own modules and snapshotd._engine (tests/test_layout.py checks)."""
