"""Run one real feed (in this process's event loop) against the in-process simulator, with a
real ring and stats block in /dev/shm."""
from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from tests.conftest import TEST_PREFIX
from obitui.accounting import feed_violations, ring_violations
from obitui.config import FeedConfig, default_feeds, sim_bases
from obitui.core.ring import Ring
from obitui.core.shm import Segment
from obitui.core.stats import FEED_COUNTERS, FeedSlotWriter, FeedState, StatsBlock
from obitui.feeds.base import Feed
from obitui.feeds.process import make_feed
from obitui.sim.server import Simulator


class FeedHarness:
    """``label``: a default feed's, or any label with ``venue`` and ``channel`` given."""

    def __init__(self, sim: Simulator, label: str, ring_capacity: int = 1 << 20, venue: str = "",
                 channel: str = "", **overrides: Any) -> None:
        base = (FeedConfig(label, venue, channel) if venue
                else next(f for f in default_feeds() if f.label == label))
        bases = sim_bases({"binance": (sim.binance_ws_url, sim.binance_rest_url),
                           "bitget": (sim.bitget_ws_url, sim.bitget_rest_url)})
        ws, rest = base.venue_info.sim_urls(*bases[base.venue_info.exchange])
        self.cfg: FeedConfig = replace(base, **{"ws_url": ws, "rest_url": rest,
                                                "ring_capacity": ring_capacity, **overrides})
        self.sim = sim
        self.prefix = f"{TEST_PREFIX}-feed-{uuid.uuid4().hex[:8]}"
        self.stats = StatsBlock.create(self.prefix + "-stats", 1, 1)
        self.ring = Ring.create(self.prefix + "-ring", ring_capacity)
        self.consumer = Ring.attach(self.prefix + "-ring")
        slot = FeedSlotWriter(self.stats, 0, self.cfg.label, self.cfg.venue, self.cfg.stream_name,
                              self.cfg.symbol, self.ring.name)
        self.feed: Feed = make_feed(self.cfg, 0, self.ring, slot, seed=1)
        self.task: asyncio.Task[None] | None = None
        self.states: list[tuple[FeedState, str]] = []

    async def __aenter__(self) -> FeedHarness:
        self.task = asyncio.get_running_loop().create_task(self.feed.run())
        orig = self.feed.stats.set_state

        def spy(state: FeedState, reason: str = "") -> None:
            if not self.states or self.states[-1] != (state, reason):
                self.states.append((state, reason))
            orig(state, reason)
        self.feed.stats.set_state = spy  # type: ignore[method-assign]
        return self

    async def __aexit__(self, exc_type: object, *exc: object) -> None:
        self.feed.stop.set()
        self.feed.skip_backoff.set()
        self.feed.request_restart_if_connected()
        stopped = False
        if self.task is not None:
            try:
                await asyncio.wait_for(self.task, 10)
                stopped = True
            except asyncio.TimeoutError:
                self.task.cancel()
        violations: list[str] = []
        if exc_type is None and stopped:
            # nothing the feed received or pushed may have disappeared uncounted
            while self.consumer.pop_batch(4096):
                pass
            counters = dict(zip(FEED_COUNTERS, self.feed.stats.counters))
            violations = (feed_violations(self.cfg.label, counters, settled=True)
                          + ring_violations(self.cfg.label, self.ring.stats(), drained=True))
            # the feed kept every limit of the real venue (message rates, subscriptions, ...)
            violations += [f"simulator: venue limit {k} broken {n} time(s)"
                           for k, n in self.sim.violations.items()]
        self.consumer.close()
        self.ring.close()
        self.stats.close()
        Ring.unlink(self.ring.name)
        Segment.unlink(self.prefix + "-stats")
        assert not violations, violations

    @property
    def state(self) -> FeedState:
        return self.feed.stats.state

    def count(self, name: str) -> int:
        return self.feed.stats.get(name)

    async def wait_for(self, pred: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
        t0 = time.monotonic()
        while not pred():
            if time.monotonic() - t0 > timeout:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}; "
                                     f"state {self.state.word} ({self.feed.stats.reason}); "
                                     f"states {self.states[-8:]}")
            await asyncio.sleep(0.02)

    async def wait_state(self, state: FeedState, timeout: float = 10.0) -> None:
        await self.wait_for(lambda: self.state == state, timeout, state.word)

    def book_matches_truth(self, depth: int = 500, market: int = 0) -> bool:
        """The top ``depth`` levels (a Binance snapshot holds ``snapshot_limit`` levels, so a
        deeper comparison would fail on a deeper simulated book by design) of the feed's
        ``market``-th symbol."""
        book = self.feed.markets[market].book  # type: ignore[attr-defined]
        if not book.valid:
            return False
        venue = self.cfg.venue
        truth = self.sim.truth(venue, self.cfg.symbols[market], book.update_id)
        if truth is None:
            return False
        bids, asks = book.top(depth)
        return ([tuple(x) for x in truth["bids"][:depth]] == bids
                and [tuple(x) for x in truth["asks"][:depth]] == asks)
