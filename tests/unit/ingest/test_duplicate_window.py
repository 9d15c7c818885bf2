"""The duplicate window (a two-generation numpy hash set) against a plain Python reference."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from quantlab.ingest.quality import DuplicateWindow


class Reference:
    """Same generations, with Python sets."""

    def __init__(self, size: int) -> None:
        self.size, self.cur, self.prev = size, set(), set()

    def insert(self, keys: list[int]) -> list[bool]:
        # The documented semantics: chunks of (size - held) keys, checked against both
        # generations; a generation that is full after a chunk rotates.
        out: list[bool] = []
        rest = [k or 1 for k in keys]
        while rest:
            chunk, rest = rest[: self.size - len(self.cur)], rest[self.size - len(self.cur) :]
            for k in chunk:
                new = k not in self.cur and k not in self.prev
                if new:
                    self.cur.add(k)
                out.append(new)
            if len(self.cur) >= self.size:
                self.prev, self.cur = self.cur, set()
        return out


batches = st.lists(st.lists(st.integers(0, 300), min_size=0, max_size=60), min_size=1, max_size=30)


@settings(max_examples=500, deadline=None)
@given(batches=batches, size=st.integers(1, 64), spread=st.sampled_from([1, 2**61, 2**63 + 5]))
def test_matches_a_python_reference(batches: list[list[int]], size: int, spread: int) -> None:
    window, ref = DuplicateWindow(size), Reference(size)
    for batch in batches:
        keys = [(k * spread) % 2**64 for k in batch]  # clustered and spread-out hash values
        got = window.insert(np.array(keys, dtype=np.uint64))
        assert got.tolist() == ref.insert(keys)
        probe = np.array(sorted({*keys, 12345}), dtype=np.uint64)
        expected = [(k or 1) in ref.cur or (k or 1) in ref.prev for k in probe.tolist()]
        assert window.contains(probe).tolist() == expected


def test_the_first_copy_in_a_batch_is_kept() -> None:
    window = DuplicateWindow(100)
    got = window.insert(np.array([7, 8, 7, 7, 9, 8], dtype=np.uint64))
    assert got.tolist() == [True, True, False, False, True, False]


def test_a_window_forgets_after_two_generations() -> None:
    window = DuplicateWindow(3)
    assert window.insert(np.array([1, 2, 3], dtype=np.uint64)).all()  # fills, rotates
    assert not window.insert(np.array([1], dtype=np.uint64)).any()  # still in the previous
    assert window.insert(np.array([4, 5, 6], dtype=np.uint64)).all()  # rotates again
    assert window.insert(np.array([1], dtype=np.uint64)).all()  # forgotten now


def test_many_colliding_keys_probe_correctly() -> None:
    window = DuplicateWindow(1000)
    mask = len(window._cur)
    keys = np.array([mask * i + 3 for i in range(500)], dtype=np.uint64)  # one home slot
    assert window.insert(keys).all()
    assert window.contains(keys).all()
    assert not window.insert(keys).any()
    assert not window.contains(keys + np.uint64(1)).any()
