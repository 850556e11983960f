"""Feed counters in the stats block: a gauge the feed decrements (frames_pending) is stored
signed, reads back as written (also below zero), and keeps its name in the published view."""
from __future__ import annotations

import pytest

from obitui.core.shm import Segment
from obitui.core.stats import FEED_COUNTERS, FEED_GAUGES, FeedSlotWriter, StatsBlock

pytestmark = pytest.mark.timeout(60)


def test_frames_pending_is_a_signed_gauge(shm_name: str) -> None:
    assert "frames_pending" in FEED_GAUGES and set(FEED_GAUGES) <= set(FEED_COUNTERS)
    blk = StatsBlock.create(shm_name, 1, 0)
    try:
        w = FeedSlotWriter(blk, 0, "F", "venue", "stream", "SYM")
        w.inc("frames", 3)
        w.inc("frames_pending", 3)
        w.inc("frames_pending", -1)
        w.publish()
        v = blk.read_feed(0)
        assert v is not None and v.counters["frames_pending"] == 2 and v.counters["frames"] == 3
        w.inc("frames_pending", -3)              # a decrement past zero is a figure, not a crash
        assert w.get("frames_pending") == -1
        w.publish()
        v = blk.read_feed(0)
        assert v is not None and v.counters["frames_pending"] == -1 and v.counters["frames"] == 3
        w.inc("bytes", 2**62)                    # the monotonic counters keep their range
        w.publish()
        v = blk.read_feed(0)
        assert v is not None and v.counters["bytes"] == 2**62
    finally:
        blk.close()
        Segment.unlink(shm_name)
