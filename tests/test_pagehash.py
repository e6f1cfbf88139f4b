"""The engine's page hash (engine/csrc/blake3_pages.c, written from the BLAKE3
specification) against the reference `blake3` package, on both its paths:
16 pages at a time with AVX-512, and the scalar one used for the tail and on
machines without AVX-512."""
from __future__ import annotations

import hashlib

import blake3
import numpy as np
import pytest

from snapshotd import pagehash
from snapshotd.storage.pageindex import ZERO_DIGESTS

PAGE = 4096


def reference(data: np.ndarray) -> np.ndarray:
    return np.array([np.frombuffer(blake3.blake3(data[i * PAGE:(i + 1) * PAGE].tobytes()).digest(), np.uint8)
                     for i in range(len(data) // PAGE)]).reshape(-1, 32)


@pytest.mark.parametrize("n", [1, 3, 4, 15, 16, 17, 31, 33, 300])
def test_blake3_of_pages_matches_the_reference(n):
    rng = np.random.default_rng(n)
    data = rng.integers(0, 256, n * PAGE, dtype=np.uint8)
    data[:PAGE // 2] = 0  # pages with long zero runs and single set bytes too
    if n > 2:
        data[2 * PAGE:3 * PAGE] = 0
        data[2 * PAGE + 4095] = 1
    want = reference(data)
    assert (pagehash.blake3_page_list(data) == want).all()
    assert (pagehash.blake3_page_list(data, force_scalar=True) == want).all()


def test_hash_pages_gives_the_zero_digest_for_zero_pages_only():
    rng = np.random.default_rng(1)
    data = rng.integers(0, 256, 40 * PAGE, dtype=np.uint8)
    data[5 * PAGE:9 * PAGE] = 0
    for algo, ref in (("blake3", reference(data)),
                      ("sha256", np.array([np.frombuffer(hashlib.sha256(data[i * PAGE:(i + 1) * PAGE]).digest(),
                                                         np.uint8) for i in range(40)]))):
        got = pagehash.hash_pages(data, algo)
        zero = np.zeros(32, np.uint8)
        for i in range(40):
            assert (got[i] == (zero if 5 <= i < 9 else ref[i])).all(), (algo, i)


def test_index_knows_the_zero_page_by_every_digest():
    assert blake3.blake3(bytes(PAGE)).digest() in ZERO_DIGESTS
    assert hashlib.sha256(bytes(PAGE)).digest() in ZERO_DIGESTS


def test_digest_table_behaves_like_a_dict():
    """The store's page index (engine/csrc/hashtab.c) against a dict, through
    growth, batches that repeat a digest, and digests seen before."""
    from snapshotd.storage.pageindex import MISSING, DigestTable
    rng = np.random.default_rng(0)
    t, d = DigestTable(), {}
    for _ in range(30):
        keys = rng.integers(0, 256, (int(rng.integers(1, 5000)), 32), dtype=np.uint8)
        keys[::3] = keys[0]
        if d and rng.random() < 0.5:
            keys = np.concatenate([keys, np.frombuffer(b"".join(list(d)[:50]), np.uint8).reshape(-1, 32)])
        first = int(rng.integers(0, 1 << 40))
        out, fresh = t.assign(keys, first)
        k = 0
        for i, key in enumerate(map(bytes, keys)):
            if key not in d:
                d[key] = first + k
                assert fresh[k] == i
                k += 1
            assert out[i] == d[key]
        assert len(fresh) == k and len(t) == len(d)
    known = np.frombuffer(b"".join(d), np.uint8).reshape(-1, 32)
    assert (t.get(known) == np.array(list(d.values()), np.uint64)).all()
    assert (t.get(rng.integers(0, 256, (10, 32), dtype=np.uint8)) == MISSING).all()
    t.put(known[:5], np.arange(5, dtype=np.uint64))
    assert t.get(known[:5]).tolist() == [0, 1, 2, 3, 4] and len(t) == len(d)
    ks, vs = t.items()
    assert len(ks) == len(d)
