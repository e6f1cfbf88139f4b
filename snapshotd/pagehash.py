"""SHA-256 of 4 KiB pages, computed in C (OpenSSL, SHA-NI) over a whole buffer.

Page hashes name page contents everywhere: dump computes them while reading
memory, storage uses them to deduplicate and to verify what it reads back.
The all-zero digest is reserved for the zero page (never stored)."""
from __future__ import annotations

import numpy as np

from ._engine import ffi, lib

PAGE = 4096
HASH_SIZE = 32
ZERO_HASH = bytes(HASH_SIZE)


def hash_pages(data) -> np.ndarray:
    """data: a buffer of n*4096 bytes; returns an (n, 32) uint8 array: the
    SHA-256 of each page, ZERO_HASH for a page of zeros."""
    mv = memoryview(data).cast("B")
    n = len(mv) // PAGE
    out = np.empty((n, HASH_SIZE), dtype=np.uint8)
    if n:
        lib.snp_sha256_pages(ffi.from_buffer("uint8_t[]", mv), n, ffi.from_buffer("uint8_t[]", out))
    return out


def nonzero_mask(data) -> np.ndarray:
    """Boolean array: which 4 KiB pages of data hold a non-zero byte."""
    mv = memoryview(data).cast("B")
    n = len(mv) // PAGE
    out = np.zeros(n, dtype=np.uint8)
    if n:
        lib.snp_count_nonzero_pages(ffi.from_buffer("uint8_t[]", mv), n, ffi.from_buffer("uint8_t[]", out))
    return out.astype(bool)
