"""cffi build script for the C engine (snapshotd._engine).

setup.py names it in cffi_modules, so `pip install .` compiles engine/csrc/*.c.
The Python side sees exactly what engine/csrc/engine.h declares: its
declarations are handed to cffi, one copy of them for C and Python alike.
"""
import os
import re

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join(HERE, "csrc")


def cdef_of(header: str) -> str:
    """engine.h as cffi's cdef reads it: declarations and the SNP_ integer
    #defines (a U/L suffix dropped); the include guard and #includes left out."""
    out = []
    for line in header.splitlines():
        if line.lstrip().startswith("#"):
            m = re.match(r"\s*#define\s+(SNP_\w+)\s+(0x[0-9A-Fa-f]+|\d+)[UL]*\b", line)
            if m:
                out.append(f"#define {m.group(1)} {m.group(2)}")
            continue
        out.append(line)
    return "\n".join(out)


ffibuilder = FFI()
with open(os.path.join(CSRC, "engine.h")) as f:
    ffibuilder.cdef(cdef_of(f.read()))

SOURCES = ["ptrace_ctl.c", "inject.c", "memory.c", "blake3_pages.c", "hashtab.c", "spawn.c", "pipes.c", "track.c", "writeback.c", "pagetable.c", "childcopy.c"]
ffibuilder.set_source(
    "snapshotd._engine",
    '#include "engine.h"',
    sources=[os.path.relpath(os.path.join(CSRC, s)) for s in SOURCES],
    include_dirs=[os.path.relpath(CSRC)],
    libraries=["crypto"],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-std=gnu11"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
