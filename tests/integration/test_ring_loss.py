"""A snapshot that does not make it into a full ring is sent again once the ring has room (the
soak found books left invalid for good: the lost snapshot cleared the feed's loss flag), and
the engine does not answer ring loss with resync requests of its own (they made a storm)."""
from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from obitui.core.records import Kind
from obitui.core.stats import Command, FeedState
from obitui.sim.server import SimConfig, Simulator
from tests.integration.feed_harness import FeedHarness

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    s = Simulator(SimConfig(seed=4, rate=200.0, depth=400))
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


@pytest.mark.parametrize("label", ["Bi-OB", "Bg-OB"])
async def test_a_snapshot_lost_in_a_full_ring_is_sent_again(sim: Simulator, label: str) -> None:
    async with FeedHarness(sim, label, ring_capacity=1 << 16) as h:
        await h.wait_state(FeedState.CONNECTED_SYNCED, 15)
        # nobody pops: the ring fills and updates are dropped
        await h.wait_for(lambda: h.count("ring_drops") > 0, 30, "ring drops")
        snapshots = h.count("snapshots")
        h.stats.send_command(0, Command.RESYNC)          # a new snapshot, into the full ring
        await h.wait_for(lambda: h.count("snapshots") > snapshots, 15, "the new snapshot")
        await h.wait_state(FeedState.CONNECTED_SYNCED, 15)
        drops = h.count("ring_drops")
        assert h.feed.lossy, "the snapshot was dropped: the feed must still know its engine lost records"
        h.consumer.pop_batch(1_000_000)                  # the engine catches up
        await h.wait_for(lambda: h.count("ring_drops") == drops and not h.feed.lossy, 10, "the resend")
        kinds = [k for k, _, _ in h.consumer.pop_batch(1_000_000)]
        assert Kind.BOOK_SNAPSHOT in kinds, "the book was not sent again after the drop"
