"""The accounting invariants: nothing received disappears uncounted.

Feed (from one consistent FeedSlot snapshot, true at every publish):
    frames == frames_pushed + frames_dropped + frames_rejected + frames_ignored
              + frames_discarded + frames_pending
Ring (producer and consumer counters in the ring header, kept across restarts of either side):
    seq == pushed + drops                      (every push attempt takes one seq)
    pushed == popped + records still in the ring, so popped == pushed once drained
    lost == drops once drained                 (the consumer saw every drop as a seq gap)
"""
from __future__ import annotations

from collections.abc import Mapping

from obitui.core.stats import FRAME_FATES


def feed_violations(label: str, counters: Mapping[str, int], settled: bool = False) -> list[str]:
    """What breaks the feed invariant ([] when it holds). ``settled``: the feed has stopped,
    so nothing may be pending."""
    out = []
    total = sum(counters[k] for k in FRAME_FATES)
    if counters["frames"] != total:
        parts = " + ".join(f"{k[7:]} {counters[k]}" for k in FRAME_FATES)
        out.append(f"{label}: frames {counters['frames']} != {parts} = {total}")
    if counters["unhandled"]:
        out.append(f"{label}: {counters['unhandled']} frame(s) without an outcome")
    if settled and counters["frames_pending"]:
        out.append(f"{label}: {counters['frames_pending']} frame(s) still pending after the stop")
    return out


def ring_violations(label: str, st: Mapping[str, int], drained: bool) -> list[str]:
    """What breaks the ring invariant ([] when it holds), from ``Ring.stats()``. ``drained``:
    the producer has stopped and the consumer emptied the ring."""
    out = []
    if st["seq"] != st["pushed"] + st["drops"]:
        out.append(f"{label}: ring seq {st['seq']} != pushed {st['pushed']} + drops {st['drops']}")
    if st["popped"] > st["pushed"]:
        out.append(f"{label}: ring popped {st['popped']} > pushed {st['pushed']}")
    if drained:
        if st["popped"] != st["pushed"]:
            out.append(f"{label}: drained ring popped {st['popped']} != pushed {st['pushed']}")
        if st["lost"] != st["drops"]:
            out.append(f"{label}: the engine saw {st['lost']} lost record(s), the feed dropped "
                       f"{st['drops']}")
    elif st["lost"] > st["drops"]:
        out.append(f"{label}: the engine saw {st['lost']} lost record(s), more than the feed "
                   f"dropped ({st['drops']})")
    return out
