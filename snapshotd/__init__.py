"""snapshotd: transparent checkpoint/restore of Linux process trees for HPC (docs/INTERNALS.md maps the code)."""
__version__ = "0.1.0"
