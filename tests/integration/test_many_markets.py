"""Many markets on one feed process and one connection: every book has its own continuity,
state and resync, and a resync of one leaves the others flowing; REST snapshots stay inside
the venue's weight budget; the status line counts books."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

import obitui.feeds.budget as budget
import obitui.sim.binance as sim_binance
from obitui.config import sim_bases
from obitui.core.stats import Command, FeedState
from obitui.sim.server import SimConfig, Simulator
from tests.integration.feed_harness import FeedHarness

pytestmark = pytest.mark.timeout(120)
SYMBOLS = ("BTCUSDT", "ETHUSDT", "PEPEUSDT")
# per-market scales, as the venues' tick/step sizes give them at start: PEPEUSDT's quantities
# (1e10 and more, whole units) do not fit 8 decimals in an int64
SCALES = {"Bi-OB": (("BTCUSDT", 2, 5), ("ETHUSDT", 2, 4), ("PEPEUSDT", 8, 0)),
          "Bg-OB": (("BTCUSDT", 2, 6), ("ETHUSDT", 2, 4), ("PEPEUSDT", 8, 0))}


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    s = Simulator(SimConfig(seed=21, rate=60.0, depth=300, symbols=SYMBOLS, bitget_ping_timeout=5.0))
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


def all_match(h: FeedHarness, depth: int = 500) -> bool:
    return all(h.book_matches_truth(depth, market=k) for k in range(len(h.cfg.symbols)))


@pytest.mark.parametrize("label", ["Bi-OB", "Bg-OB"])
async def test_one_resync_leaves_the_other_books_flowing(sim: Simulator, label: str) -> None:
    async with FeedHarness(sim, label, symbols=SYMBOLS, market_scales=SCALES[label]) as h:
        feed = h.feed
        await h.wait_state(FeedState.CONNECTED_SYNCED)
        await h.wait_for(lambda: all_match(h), 15, "every book to equal the truth")
        assert h.feed.stats.reason == "3/3 books synced"
        assert h.feed.stats.get("books") == 3 and h.feed.stats.get("books_synced") == 3
        eth = feed.markets[1]                                   # type: ignore[attr-defined]
        others = [feed.markets[0], feed.markets[2]]             # type: ignore[attr-defined]
        before = [m.book.update_id for m in others]
        seq = h.stats.send_command(0, Command.RESYNC, book=eth.book_id)
        await h.wait_for(lambda: h.stats.read_ack(0)[0] == seq, 5, "the resync to be acknowledged")
        assert h.count("resyncs") == 1
        # the others never stopped: valid all along, and moving
        await h.wait_for(lambda: all(m.book.update_id > b for m, b in zip(others, before)), 10,
                         "the other books to keep updating")
        assert all(m.book.valid for m in others)
        await h.wait_state(FeedState.CONNECTED_SYNCED)
        await h.wait_for(lambda: all_match(h), 15, "every book to equal the truth again")
        assert h.count("reconnects") == 0


@pytest.mark.parametrize("label", ["Bi-OB", "Bg-OB"])
async def test_one_connection_of_several_lost(sim: Simulator, label: str) -> None:
    """Three markets on two connections of one process (``per_connection = 2``): the venue
    drops the connection carrying PEPEUSDT; its book goes invalid and comes back, the books of
    the other connection stay valid and moving throughout, and the feed's state says which
    connection is down until it is back."""
    from obitui.feeds.group import FeedGroup
    async with FeedHarness(sim, label, symbols=SYMBOLS, market_scales=SCALES[label], per_connection=2) as h:
        group = h.feed
        assert isinstance(group, FeedGroup) and [c.cfg.symbols for c in group.conns] == [
            ("BTCUSDT", "ETHUSDT"), ("PEPEUSDT",)]
        await h.wait_state(FeedState.CONNECTED_SYNCED)
        await h.wait_for(lambda: all_match(h), 15, "every book to equal the truth")
        assert h.count("connections") == 2 and h.count("connections_up") == 2
        assert h.feed.stats.reason == "3/3 books synced"
        server = sim.binance if label.startswith("Bi") else sim.bitget
        pepe = [c for c in server.conns if any("pepe" in str(k).lower() for k in c.subs)]
        assert len(pepe) == 1 and len(server.conns) == 2
        kept = group.markets[:2]
        before = [m.book.update_id for m in kept]
        valid_throughout = True

        down_gauges: set[tuple[int, int]] = set()

        def watch() -> bool:
            nonlocal valid_throughout
            valid_throughout &= all(m.book.valid for m in kept)
            if h.count("connections_up") == 1 and not group.markets[2].book.valid:
                # the gauges count the whole feed while one connection is down
                down_gauges.add((h.count("books"), h.count("books_synced")))
            return True

        # one snapshot depth for the process, whichever connection asks
        assert len({c.snapshot_limit for c in group.conns if hasattr(c, "snapshot_limit")}) <= 1
        pepe[0].close_soon(1001, "test: one connection lost")
        await h.wait_for(lambda: watch() and not group.markets[2].book.valid, 10, "PEPEUSDT invalid")

        await h.wait_for(lambda: watch() and h.count("reconnects") == 1, 10, "the reconnect")
        await h.wait_for(lambda: watch() and h.state == FeedState.CONNECTED_SYNCED, 20, "synced again")
        await h.wait_for(lambda: all_match(h), 15, "every book to equal the truth again")
        assert valid_throughout, "a book of the other connection went invalid"
        assert down_gauges <= {(3, 2)}, down_gauges
        assert all(m.book.update_id > b for m, b in zip(kept, before))
        assert h.count("connections_up") == 2 and h.count("reconnects") == 1
        # while it was down, the feed said which connection
        assert any(st in (FeedState.BACKOFF, FeedState.CONNECTING) and r.startswith("connection 2/2: ")
                   for st, r in h.states), h.states[-10:]


async def test_gaps_resync_their_own_books(sim: Simulator) -> None:
    """Diffs dropped at random on every stream: each gap resyncs its market alone (one REST
    snapshot each), and all books come back equal to the truth."""
    async with FeedHarness(sim, "Bi-OB", symbols=SYMBOLS, market_scales=SCALES["Bi-OB"]) as h:
        await h.wait_state(FeedState.CONNECTED_SYNCED)
        sim.faults.set("gap", 0.05)
        await h.wait_for(lambda: h.count("gaps") >= 3, 20, "gaps")
        sim.faults.clear()
        await h.wait_state(FeedState.CONNECTED_SYNCED, 15)
        await h.wait_for(lambda: all_match(h), 15, "every book to equal the truth")
        assert h.count("rest_requests") == h.count("snapshots") >= 3 + 3
        assert h.count("reconnects") == 0


async def test_weight_budget_under_a_resync_storm(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 3 s 'minute' of 160 weight (6 snapshots of limit 1000): resyncing every book again and
    again waits for the next minute instead of drawing a 429; the simulator sees no breach (the
    harness asserts no violation)."""
    monkeypatch.setattr(sim_binance, "WEIGHT_WINDOW_S", 3.0)
    monkeypatch.setattr(budget, "WEIGHT_WINDOW_S", 3.0)
    monkeypatch.setattr(budget, "WEIGHT_MARGIN_S", 0.1)
    s = Simulator(SimConfig(seed=22, rate=60.0, depth=300, symbols=SYMBOLS, weight_limit=160))
    await s.start()
    try:
        async with FeedHarness(s, "Bi-OB", symbols=SYMBOLS, market_scales=SCALES["Bi-OB"]) as h:
            h.feed.budget.limit = 160                           # type: ignore[attr-defined]
            await h.wait_state(FeedState.CONNECTED_SYNCED)
            for _ in range(4):
                h.stats.send_command(0, Command.RESYNC)
                await asyncio.sleep(0.3)
            await h.wait_state(FeedState.CONNECTED_SYNCED, 30)
            # a storm's snapshots may be shallower (never below 100 levels): a book is exact
            # within its snapshot's price range, so its top 20 (what is shown and published)
            await h.wait_for(lambda: all_match(h, 20), 15, "every book to equal the truth")
            assert h.count("rest_weight_waits") >= 1
            assert h.count("http_429") == 0 and h.count("http_418") == 0
    finally:
        await s.stop()


def test_obitui_sim_top_40() -> None:
    """The issue's check: `obitui --sim --symbols top:40 --no-ui --json` syncs 80 books on 4
    feed processes, with nothing dropped; `--books`/`--levels` keep the output small."""
    res = subprocess.run([sys.executable, "-m", "obitui", "--sim", "--symbols", "top:40", "--no-ui", "--json",
                          "--duration", "12", "--books", "BTCUSDT,ETHUSDT", "--levels", "3"],
                         capture_output=True, text=True, timeout=90)
    assert res.returncode == 0, res.stderr[-3000:]
    final = json.loads(res.stdout.splitlines()[-1])
    assert set(final["feeds"]) == {"Bi-OB", "Bi-TR", "Bg-OB", "Bg-PR"}           # 4 processes
    for label in ("Bi-OB", "Bg-OB"):
        feed = final["feeds"][label]
        assert (feed["state"], feed["books"], feed["books_synced"]) == ("connected_synced", 40, 40), feed
    assert all(f["markets"] == 40 and f["ring_drops"] == 0 and f["gaps"] == 0 for f in final["feeds"].values())
    assert set(final["books"]) == {"binance:BTCUSDT", "binance:ETHUSDT", "bitget:BTCUSDT", "bitget:ETHUSDT"}
    for book in final["books"].values():
        assert book["valid"] and book["state"] == "synced" and len(book["bids"]) == len(book["asks"]) == 3


def test_losing_one_process_of_a_split_feed_leaves_the_other_books_valid() -> None:
    """Bi-OB split over two processes (a connection each): SIGKILL one; its market is
    invalidated and comes back, the other process's market stays valid and moving throughout."""
    from dataclasses import replace

    from obitui.config import book_plan, load_config, split_processes
    from obitui.supervisor import Supervisor
    cfg = load_config(None)
    cfg.feeds = split_processes([replace(f, symbol="", symbols=("BTCUSDT", "ETHUSDT"), processes=2)
                                 for f in cfg.feeds if f.label == "Bi-OB"])
    assert [(f.label, f.symbols) for f in cfg.feeds] == [("Bi-OB#1", ("BTCUSDT",)), ("Bi-OB#2", ("ETHUSDT",))]
    sup = Supervisor(cfg)
    try:
        sup.start_simulator([], seed=3)
        sup.cfg = cfg.with_sim_bases(sim_bases(sup.sim_urls))
        sup.start()
        assert sup.stats is not None
        plan = book_plan(sup.cfg.feeds)
        btc, eth = plan.index("binance:BTCUSDT"), plan.index("binance:ETHUSDT")

        def book(j: int) -> Any:
            return sup.stats.read_book(j)

        def wait(pred: Any, timeout: float, what: str) -> None:
            end = time.monotonic() + timeout
            while not pred():
                assert time.monotonic() < end, f"timed out waiting for {what}"
                sup.poll()
                time.sleep(0.05)
        wait(lambda: all(book(j) is not None and book(j).valid for j in (btc, eth)), 20, "both books")
        victim = sup.pids()["Bi-OB#1"]
        btc_before, eth_before = book(btc).invalidations, book(eth).invalidations
        os.kill(victim, signal.SIGKILL)
        eth_ids: list[int] = []
        end = time.monotonic() + 20
        while time.monotonic() < end:
            sup.poll()
            b, e = book(btc), book(eth)
            if e is not None:
                assert e.valid, "the other process's book was invalidated"
                eth_ids.append(e.update_id)
            # the restarted process invalidates its book (an invalid spell may be shorter than
            # a publish: the count says it happened) and syncs it again
            if (b is not None and b.valid and b.invalidations > btc_before
                    and sup.pids().get("Bi-OB#1", victim) != victim):
                end = min(end, time.monotonic() + 2.0)      # and watch the other one 2 s more
            time.sleep(0.05)
        b = book(btc)
        assert b.valid and b.invalidations > btc_before, "the killed process's book was not resynced"
        assert book(eth).invalidations == eth_before, "the other process's book was invalidated"
        assert len(set(eth_ids)) >= 5, "the other book did not keep moving"
    finally:
        sup.stop()


async def test_a_lone_resync_far_from_the_next_minute_comes_back_shallower(
        sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """One book to resync and the minute's weight too short for its full depth: when the next
    minute is far (more than SHALLOW_AFTER_S), it asks a shallower snapshot that fits (never
    below 100 levels) instead of waiting; with room, or the next minute near, full depth."""
    import obitui.feeds.binance.feed as bfeed
    async with FeedHarness(sim, "Bi-OB", symbols=SYMBOLS, market_scales=SCALES["Bi-OB"], snapshot_limit=1000) as h:
        await h.wait_state(FeedState.CONNECTED_SYNCED)
        feed = h.feed
        m = feed.markets[0]                                     # type: ignore[attr-defined]
        budget_ = feed.budget                                   # type: ignore[attr-defined]
        assert budget_.limit == 6000 and m.snapshot_task is None
        m.snapshot_task = asyncio.get_running_loop().create_future()   # as if it waited for one
        try:
            assert feed.request_limit() == 1000                 # type: ignore[attr-defined]
            monkeypatch.setattr(bfeed, "SHALLOW_AFTER_S", -1.0)  # "the next minute is far"
            budget_.spend(budget_.limit - budget_.used - 20, time.time())
            assert feed.request_limit() == 100                  # type: ignore[attr-defined]
            monkeypatch.setattr(bfeed, "SHALLOW_AFTER_S", 1e9)   # "the next minute is near"
            assert feed.request_limit() == 1000                 # type: ignore[attr-defined]
        finally:
            m.snapshot_task = None
