"""Hashes of 4 KiB pages, computed in C over a whole buffer, and helpers on
arrays of page addresses (page_runs).

Page hashes name page contents everywhere: dump computes them while reading
memory, storage uses them to deduplicate and to verify what it reads back.
New packs name pages by BLAKE3 (engine/csrc/blake3_pages.c: 16 pages at a
time with AVX-512, ~2x SHA-256 with SHA-NI here); packs of format 1 by
SHA-256, which stays readable.  The all-zero digest is reserved for the zero
page (never stored), whatever the algorithm."""
from __future__ import annotations

import numpy as np

from ._engine import ffi, lib
from .kernel.syscalls import PAGE

HASH_SIZE = 32
ZERO_HASH = bytes(HASH_SIZE)
HASH_NAME = "blake3"  # what new packs use
_ALGOS = {"blake3": lib.SNP_HASH_BLAKE3, "sha256": lib.SNP_HASH_SHA256}
ALGORITHMS = tuple(_ALGOS)


def hash_pages(data, algo: str = HASH_NAME) -> np.ndarray:
    """data: a buffer of n*4096 bytes; returns an (n, 32) uint8 array: the
    hash of each page (algo: "blake3" or "sha256"), ZERO_HASH for a page of
    zeros."""
    mv = memoryview(data).cast("B")
    n = len(mv) // PAGE
    out = np.empty((n, HASH_SIZE), dtype=np.uint8)
    if n:
        lib.snp_hash_pages(ffi.from_buffer("uint8_t[]", mv), n, ffi.from_buffer("uint8_t[]", out), _ALGOS[algo], ffi.NULL)
    return out


def blake3_page_list(data, force_scalar: bool = False) -> np.ndarray:
    """BLAKE3 of every page of data, zero pages included (for tests: the
    vector and scalar paths against a reference implementation)."""
    mv = memoryview(data).cast("B")
    n = len(mv) // PAGE
    out = np.zeros((n, HASH_SIZE), dtype=np.uint8)
    idx = np.arange(n, dtype=np.uint32)
    if n:
        lib.snp_b3_pages_idx(ffi.from_buffer("uint8_t[]", mv), ffi.from_buffer("uint32_t[]", idx), n,
                             ffi.from_buffer("uint8_t[]", out), int(force_scalar))
    return out


def nonzero_rows(hashes: np.ndarray) -> np.ndarray:
    """Indices of the pages that are not all zero, from their hashes (n, 32):
    the engine gives a zero page an all-zero hash instead of hashing it."""
    return np.flatnonzero(np.ascontiguousarray(hashes).view(np.uint64).any(axis=1))


def nonzero_mask(data) -> np.ndarray:
    """Boolean array: which 4 KiB pages of data hold a non-zero byte."""
    mv = memoryview(data).cast("B")
    n = len(mv) // PAGE
    out = np.zeros(n, dtype=np.uint8)
    if n:
        lib.snp_count_nonzero_pages(ffi.from_buffer("uint8_t[]", mv), n, ffi.from_buffer("uint8_t[]", out))
    return out.astype(bool)


def page_runs(addrs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Runs of consecutive pages in sorted page addresses: (index of each
    run's first page, pages in it)."""
    if not len(addrs):
        return np.empty(0, np.intp), np.empty(0, np.intp)
    first = np.concatenate(([0], np.flatnonzero(np.diff(addrs) != PAGE) + 1))
    return first, np.diff(np.append(first, len(addrs)))
