"""obitui.accounting: the reference the feed and ring tests judge by. Each kind of violation it
is meant to catch is caught, with the figures in its message, and consistent counters pass."""
from __future__ import annotations

import pytest

from obitui.accounting import feed_violations, ring_violations
from obitui.core.stats import FEED_COUNTERS, FRAME_FATES


def feed(**kw: int) -> dict[str, int]:
    """A full counter set as a feed publishes it (every FEED_COUNTERS key), zero unless given."""
    c = dict.fromkeys(FEED_COUNTERS, 0)
    unknown = set(kw) - set(c)
    assert not unknown, unknown
    c.update(kw)
    return c


CONSISTENT = feed(frames=100, frames_pushed=40, frames_dropped=5, frames_rejected=20, frames_ignored=15,
                  frames_discarded=12, frames_pending=8, bytes=12345, records=41, pongs=3)


def test_the_fates_are_the_six_of_the_invariant() -> None:
    assert FRAME_FATES == ("frames_pushed", "frames_dropped", "frames_rejected", "frames_ignored",
                           "frames_discarded", "frames_pending")


def test_consistent_counters_have_no_violation() -> None:
    assert feed_violations("X", feed()) == []                       # nothing received yet
    assert feed_violations("X", feed(), settled=True) == []
    assert feed_violations("X", CONSISTENT) == []                   # pending is fine while running
    settled = dict(CONSISTENT, frames_pending=0, frames_discarded=20)
    assert feed_violations("X", settled, settled=True) == []
    # counters outside the invariant (pongs, bytes, records, errors...) do not enter it
    assert feed_violations("X", dict(CONSISTENT, pongs=10**6, parse_errors=7, frame_errors=2)) == []


@pytest.mark.parametrize("fate", FRAME_FATES)
def test_a_frame_missing_from_any_fate_is_caught(fate: str) -> None:
    """More frames than fates: a frame received and never settled (lost from the count)."""
    c = dict(CONSISTENT, frames=CONSISTENT["frames"] + 1)
    assert feed_violations("Bi-OB", c) == [
        "Bi-OB: frames 101 != pushed 40 + dropped 5 + rejected 20 + ignored 15 + discarded 12 "
        "+ pending 8 = 100"]
    # and every fate takes part in the sum: one frame too many in any of them is caught too
    c = dict(CONSISTENT, **{fate: CONSISTENT[fate] + 1})
    out = feed_violations("Bi-OB", c)
    assert len(out) == 1 and out[0].startswith("Bi-OB: frames 100 != ") and out[0].endswith(" = 101")
    assert f"{fate[7:]} {CONSISTENT[fate] + 1}" in out[0]


def test_a_frame_counted_twice_is_caught() -> None:
    c = dict(CONSISTENT, frames_pushed=41, frames_rejected=21)
    assert feed_violations("Bg-PR", c) == [
        "Bg-PR: frames 100 != pushed 41 + dropped 5 + rejected 21 + ignored 15 + discarded 12 "
        "+ pending 8 = 102"]


def test_unhandled_frames_are_caught_even_when_the_sum_holds() -> None:
    # frame_done counts an unhandled frame as rejected too, so the sum holds: only `unhandled` tells
    c = dict(CONSISTENT, unhandled=2)
    assert feed_violations("Bi-TR", c) == ["Bi-TR: 2 frame(s) without an outcome"]


def test_pending_after_the_stop_is_caught_only_when_settled() -> None:
    assert feed_violations("Bg-OB", CONSISTENT) == []
    assert feed_violations("Bg-OB", CONSISTENT, settled=True) == [
        "Bg-OB: 8 frame(s) still pending after the stop"]


def test_every_violation_at_once_is_reported() -> None:
    c = dict(CONSISTENT, frames=99, unhandled=1)
    assert feed_violations("L", c, settled=True) == [
        "L: frames 99 != pushed 40 + dropped 5 + rejected 20 + ignored 15 + discarded 12 + pending 8 = 100",
        "L: 1 frame(s) without an outcome",
        "L: 8 frame(s) still pending after the stop"]


# ---------------------------------------------------------------- ring_violations
def ring(**kw: int) -> dict[str, int]:
    return {"seq": 0, "pushed": 0, "drops": 0, "popped": 0, "lost": 0} | kw


def test_consistent_rings_have_no_violation() -> None:
    assert ring_violations("r", ring(), drained=True) == []
    # running: records still in the ring, drops not yet seen by the consumer
    assert ring_violations("r", ring(seq=10, pushed=8, drops=2, popped=5, lost=1), drained=False) == []
    assert ring_violations("r", ring(seq=10, pushed=8, drops=2, popped=8, lost=2), drained=True) == []


def test_ring_violations_each_kind() -> None:
    assert ring_violations("r", ring(seq=11, pushed=8, drops=2, popped=8, lost=2), drained=True) == [
        "r: ring seq 11 != pushed 8 + drops 2"]
    assert ring_violations("r", ring(seq=10, pushed=8, drops=2, popped=9, lost=0), drained=False) == [
        "r: ring popped 9 > pushed 8"]
    assert ring_violations("r", ring(seq=10, pushed=8, drops=2, popped=7, lost=2), drained=True) == [
        "r: drained ring popped 7 != pushed 8"]
    assert ring_violations("r", ring(seq=10, pushed=8, drops=2, popped=8, lost=1), drained=True) == [
        "r: the engine saw 1 lost record(s), the feed dropped 2"]
    assert ring_violations("r", ring(seq=10, pushed=8, drops=2, popped=5, lost=3), drained=False) == [
        "r: the engine saw 3 lost record(s), more than the feed dropped (2)"]
