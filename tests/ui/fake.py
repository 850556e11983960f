"""A frozen fleet for the console's tests and snapshots: a real stats block (and rings) filled
by an in-test writer with fixed books, trades, tickers and feed states, the wall clock frozen
(``FROZEN_NS``), so that every render is the same. ``fake_world`` cleans up every segment it
created, whatever happens in the test."""
from __future__ import annotations

import os
import uuid
from array import array
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import obitui.core.stats as stats_mod
from obitui.config import Config, FeedConfig, book_plan, default_feeds
from obitui.controller import StatsController
from obitui.core.ring import Ring
from obitui.core.stats import (
    BookSlotWriter, FeedSlotWriter, FeedState, StatsBlock, pack_market, pack_tape,
)
from tests.conftest import release_segments

FROZEN_NS = 1_767_225_600_000_000_000          # 2026-01-01 00:00:00 UTC: what "now" is here
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT", "ADAUSDT", "LINKUSDT", "LTCUSDT"]
BASES = {"BTCUSDT": 9_500_000, "ETHUSDT": 330_000, "SOLUSDT": 18_000, "XRPUSDT": 210,
         "DOGEUSDT": 32, "ADAUSDT": 95, "LINKUSDT": 2_400, "LTCUSDT": 11_000}   # price in cents


def fleet_config(symbols: list[str]) -> Config:
    """The default four feeds, each watching ``symbols`` (prices and sizes at 8 decimals)."""
    feeds = [FeedConfig(f.label, f.venue, f.channel, symbols=tuple(symbols), scales="config")
             for f in default_feeds()]
    return Config(feeds=feeds)


@dataclass
class FakeWorld:
    cfg: Config
    stats: StatsBlock
    controller: StatsController
    rings: list[Ring]
    feeds: list[FeedSlotWriter]
    books: dict[str, BookSlotWriter]
    prefix: str

    def publish(self, key: str, j: int, *, valid: bool = True, reason: str = "", update_id: int = 1000,
                age_s: float = 0.2) -> None:
        """Market ``key``'s book (its j-th variation), published as of FROZEN_NS - age_s."""
        venue, sym = key.split(":", 1)
        base = BASES.get(sym, 100 + 7 * j) * 1_000_000          # cents -> 8 decimals
        tick = max(1_000_000, base // 100_000 * 10)
        off = 0 if venue == "binance" else tick * (2 + j % 3)
        bid0 = base + off
        bids = [(bid0 - k * tick, (k % 5 + 1) * 25_000_000 + j * 1_000_000) for k in range(20)]
        asks = [(bid0 + (k + 1) * tick, ((k + 2) % 5 + 1) * 20_000_000 + j * 3_000_000) for k in range(20)]
        w = self.books[key]
        for k in range(24):
            w.push_obi(((k * 37 + j * 11) % 100 - 45) / 100)
        trades = []
        for k in range(8):
            side = 1 if (k + j) % 3 else 2
            qty = (k % 4 + 1) * 10_000_000 * (12 if k == 2 else 1)
            trades.append((FROZEN_NS - 300_000_000 * (k + 1) - j * 1_000_000, bid0 + (tick if side == 1 else 0)
                           - (k % 2) * tick, qty, side))
        last = trades[0]
        ticker = day = None
        if venue == "bitget":
            ticker = (FROZEN_NS - 500_000_000, last[1], bid0, bids[0][1], asks[0][0], asks[0][1])
            day = (FROZEN_NS - 500_000_000, base - base // 50 * (1 if j % 2 else -1), base + base // 25,
                   base - base // 30, (1234 + 97 * j) * 100_000_000)
        packed = array("q", [x for lv in bids + asks for x in lv]).tobytes()
        real = stats_mod.now_ns
        stats_mod.now_ns = lambda: FROZEN_NS - int(age_s * 1e9)       # the publish time
        try:
            w.publish_packed(valid, False, update_id + j, 2, 4, packed, 20, 20,
                             ((k := (j * 13) % 100 - 50) / 100), (
                                 (3 + j) * 10_000_000, (2 + j % 4) * 10_000_000, 4 + j % 5, 3 + j % 3),
                             (last[1], last[2], last[3], last[0]), 0, 1000 + j, reason,
                             market=pack_market(ticker, day, 500 + j), tape=pack_tape(trades))
        finally:
            stats_mod.now_ns = real


@contextmanager
def fake_world(symbols: list[str], *, bad: dict[str, str] | None = None) -> Iterator[FakeWorld]:
    """A stats block for the default fleet on ``symbols``, every book published (``bad``: key
    -> reason of the books published invalid)."""
    cfg = fleet_config(symbols)
    plan = book_plan(cfg.feeds)
    prefix = f"obitui-{os.getuid()}-test{os.getpid()}-ui-{uuid.uuid4().hex[:8]}"   # the leak check counts it
    stats = StatsBlock.create(prefix + "-stats", len(cfg.feeds), len(plan), book_keys=plan)
    rings: list[Ring] = []
    ctl = None
    try:
        rings = [Ring.create(f"{prefix}-ring{i}", 1 << 16) for i in range(len(cfg.feeds))]
        rings[0].push(b"x" * 3000)
        feeds = []
        states = [FeedState.CONNECTED_SYNCED, FeedState.CONNECTED, FeedState.RESYNCING, FeedState.LIVE]
        for i, f in enumerate(cfg.feeds):
            w = FeedSlotWriter(stats, i, f.label, f.venue, f.stream_name, f.symbol, rings[i].name)
            w.inc("frames", 1000 * (i + 1))
            w.inc("gaps", i)
            if f.is_book:
                w.set("books", len(symbols))
                w.set("books_synced", len(symbols) - (1 if i == 2 else 0))
            w.set("connections", 1)
            w.set("connections_up", 1)
            w.set_state(states[i % 4], "gap: U=5 after u=3 on ETHUSDT, resync requested (snapshot 1 of 1)"
                        if i == 2 else "")
            feeds.append(w)
        books = {key: BookSlotWriter(stats, j, "", *key.split(":", 1)) for j, key in enumerate(plan)}
        ctl = StatsController(cfg, stats, [r.name for r in rings])
        world = FakeWorld(cfg, stats, ctl, rings, feeds, books, prefix)
        bad = bad or {}
        for j, key in enumerate(plan):
            world.publish(key, j // 2, valid=key not in bad, reason=bad.get(key, ""))
        yield world
    finally:
        if ctl is not None:
            ctl.stop()
        release_segments(rings, stats)
