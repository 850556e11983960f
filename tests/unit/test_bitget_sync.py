"""Bitget books continuity (obitui/feeds/bitget/sync.py), v2 and v3, as a pure state machine."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from obitui.core.book import OrderBook
from obitui.feeds.bitget.checksum import bitget_checksum
from obitui.feeds.bitget.sync import BooksSync, Verdict

pytestmark = pytest.mark.timeout(60)


def synced(v3: bool, seq: int = 100) -> BooksSync:
    s = BooksSync(OrderBook(2), v3=v3)
    s.on_snapshot([["10.00", "1"]], [["11.00", "2"]])
    s.synced(seq)
    return s


def test_updates_before_the_snapshot_are_in_flight() -> None:
    s = BooksSync(OrderBook(2))
    assert s.check(5, 4) is Verdict.IN_FLIGHT and not s.book.valid


@pytest.mark.parametrize("v3", [False, True])
def test_the_chain(v3: bool) -> None:
    s = synced(v3)
    assert s.book.valid and s.book.update_id == 100
    assert s.check(130, 100) is Verdict.APPLY
    s.applied(130)
    assert s.check(131, 100) is Verdict.GAP and not s.book.valid and "pseq 100 != previous seq 130" in s.gap_detail
    assert s.check(140, 130) is Verdict.IN_FLIGHT       # resyncing: wait for the snapshot


@pytest.mark.parametrize("v3", [False, True])
def test_pseq_zero_on_an_update_is_a_gap(v3: bool) -> None:
    assert synced(v3).check(130, 0) is Verdict.GAP


def test_v3_first_update_may_start_before_the_snapshot() -> None:
    """v3: snapshot seq within [pseq, seq] of the first update; v2: pseq must equal it."""
    assert synced(True).check(120, 90) is Verdict.APPLY
    assert synced(False).check(120, 90) is Verdict.GAP
    assert synced(True).check(100, 90) is Verdict.ALREADY       # the snapshot holds it
    assert synced(True).check(95, 80) is Verdict.ALREADY
    s = synced(True)
    assert s.check(130, 110) is Verdict.GAP and "updates missing" in s.gap_detail   # pseq after the snapshot
    s = synced(True)
    s.applied(120)                          # only the first update has the wider rule
    assert s.check(140, 110) is Verdict.GAP


def test_older_frames() -> None:
    s = synced(False)
    assert s.check(None, None) is Verdict.APPLY               # v1: checksums only
    assert s.check(150, None) is Verdict.APPLY                # seq without pseq: it must grow
    s.applied(150)
    assert s.check(150, None) is Verdict.GAP


def test_checksum() -> None:
    s = synced(False)
    good = bitget_checksum(s.book)
    assert s.checksum_ok(None) and s.checksum_ok(0) and s.checksum_ok(good)
    assert s.checksum_ok(good % (1 << 32))                    # unsigned is the same value
    assert not s.checksum_ok(good + 1)


@given(st.lists(st.integers(1, 50), min_size=1, max_size=40), st.integers(0, 39), st.booleans())
def test_v3_join_anywhere_inside_the_jump(jumps: list[int], at: int, v3: bool) -> None:
    """A stream of updates with growing seqs; a snapshot taken after update ``at`` reports any
    seq in [its seq, the next seq): v3 applies exactly the updates after it, v2 needs the
    exact seq; then the chain goes on from the first update's seq."""
    seqs = [1000]
    for j in jumps:
        seqs.append(seqs[-1] + j)
    at = min(at, len(seqs) - 2)
    for reported in range(seqs[at], seqs[at + 1]):
        s = synced(v3, reported)
        first = s.check(seqs[at + 1], seqs[at])
        if reported != seqs[at] and not v3:
            assert first is Verdict.GAP
            continue
        assert first is Verdict.APPLY
        s.applied(seqs[at + 1])
        for i in range(at + 1, len(seqs) - 1):
            assert s.check(seqs[i + 1], seqs[i]) is Verdict.APPLY
            s.applied(seqs[i + 1])
        assert s.book.update_id == seqs[-1]
