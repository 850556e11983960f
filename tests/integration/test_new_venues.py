"""The feeds of the APIs added as venue descriptions, against the simulator speaking their
protocols: Binance USD-M futures (Bf-OB, Bf-TR) and Bitget v3 (UTA) books and ticker. Each book
must equal the simulator's true book, through gaps and resyncs, without breaking a venue limit
(the harness asserts the simulator counted no violation)."""
from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from obitui.core.records import Kind
from obitui.core.stats import Command, FeedState
from obitui.sim.server import SimConfig, Simulator
from tests.integration.feed_harness import FeedHarness

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    s = Simulator(SimConfig(seed=5, rate=100.0, depth=300, bitget_ping_timeout=5.0))
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


async def test_usdm_depth_syncs_by_the_usdm_rules_and_resyncs_after_a_gap(sim: Simulator) -> None:
    async with FeedHarness(sim, "Bf-OB", venue="binance-usdm", channel="depth", snapshot_limit=1000) as h:
        assert h.feed.url().endswith("/public/stream?streams=btcusdt@depth@100ms")
        await h.wait_state(FeedState.CONNECTED_SYNCED)
        await h.wait_for(h.book_matches_truth, 10, "the USD-M book to equal the truth")
        assert h.count("rest_requests") == 1 and h.count("gaps") == 0
        sim.faults.set("gap", 0.3)                   # deltas dropped: pu no longer chains
        await h.wait_for(lambda: h.count("gaps") >= 1, 10, "the gap to be seen")
        sim.faults.clear()
        await h.wait_state(FeedState.CONNECTED_SYNCED)
        await h.wait_for(h.book_matches_truth, 10, "the resynced book to equal the truth")
        assert "pu=" in " ".join(r for _, r in h.states), h.states    # the USD-M rule named the gap
        assert h.count("reconnects") == 0            # a resync keeps the socket


async def test_usdm_trades_come_from_the_market_route(sim: Simulator) -> None:
    async with FeedHarness(sim, "Bf-TR", venue="binance-usdm", channel="trade") as h:
        assert h.feed.url().endswith("/market/stream?streams=btcusdt@aggTrade")
        await h.wait_state(FeedState.CONNECTED)
        await h.wait_for(lambda: h.count("records") >= 5, 10, "aggTrade records")
        kinds = {kind for kind, _, _ in h.consumer.pop_batch(1000)}
        assert kinds == {int(Kind.TRADE)}
        assert h.count("parse_errors") == 0


async def test_bitget_v3_books_follow_the_truth_across_resyncs(sim: Simulator) -> None:
    """Every operator resync is a new v3 snapshot; half of them report a seq inside the next
    update's [pseq, seq] (the simulator's choice), which the v3 rule must join without a gap."""
    async with FeedHarness(sim, "Bg3-OB", venue="bitget-v3", channel="books") as h:
        assert h.feed.arg() == {"instType": "spot", "topic": "books", "symbol": "BTCUSDT"}
        await h.wait_state(FeedState.CONNECTED_SYNCED)
        await h.wait_for(h.book_matches_truth, 10, "the v3 book to equal the truth")
        for _ in range(6):
            seq = h.stats.send_command(0, Command.RESYNC)
            await h.wait_for(lambda: h.stats.read_ack(0)[0] == seq, 5, "the resync to be acknowledged")
            await h.wait_state(FeedState.CONNECTED_SYNCED)
            await h.wait_for(h.book_matches_truth, 10, "the book to equal the truth after a resync")
        assert h.count("gaps") == 0 and h.count("snapshots") >= 7


async def test_bitget_v3_error_without_arg_or_op_resubscribes(sim: Simulator) -> None:
    """A v3 error event names no subscription and no operation: the feed's only subscription
    may be gone, so it subscribes again (soon, not after the stale watchdog's minute)."""
    async with FeedHarness(sim, "Bg3-OB", venue="bitget-v3", channel="books") as h:
        await h.wait_state(FeedState.CONNECTED_SYNCED)
        subscribes = h.count("subscribes")
        sim.faults.set("bitget_error", 30016)
        await h.wait_for(lambda: h.count("venue_errors") >= 1, 10, "the error event")
        sim.faults.clear()
        await h.wait_for(lambda: h.count("subscribes") > subscribes, 5, "a new subscribe")
        await h.wait_state(FeedState.CONNECTED_SYNCED)
        await h.wait_for(h.book_matches_truth, 10, "the book to equal the truth again")
        assert h.count("reconnects") == 0


async def test_bitget_v3_ticker_and_an_unknown_symbol(sim: Simulator) -> None:
    async with FeedHarness(sim, "Bg3-PR", venue="bitget-v3", channel="ticker") as h:
        await h.wait_state(FeedState.LIVE)
        await h.wait_for(lambda: h.count("records") >= 3, 10, "ticker records")
        assert h.count("parse_errors") == 0
    async with FeedHarness(sim, "Bg3-OB", venue="bitget-v3", channel="books", symbol="NOPEUSDT") as h:
        # the v3 error event has no `arg`: the symbol is read from its message
        await h.wait_state(FeedState.FAILED)
        assert "30001" in h.feed.stats.reason and "NOPEUSDT" in h.feed.stats.reason


def test_obitui_sim_runs_the_new_feeds_from_a_config(tmp_path: Path) -> None:
    cfg = tmp_path / "venues.toml"
    cfg.write_text("".join(f'[[feeds]]\nlabel = "{label}"\nvenue = "{venue}"\nchannel = "{channel}"\n'
                           for label, venue, channel in (
                               ("Bi-OB", "binance", "depth"), ("Bf-OB", "binance-usdm", "depth"),
                               ("Bf-TR", "binance-usdm", "trade"), ("Bg-OB", "bitget", "books"),
                               ("Bg3-OB", "bitget-v3", "books"), ("Bg3-PR", "bitget-v3", "ticker"))))
    res = subprocess.run([sys.executable, "-m", "obitui", "--sim", "--config", str(cfg), "--no-ui", "--json",
                          "--duration", "8"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr[-3000:]
    final = json.loads(res.stdout.splitlines()[-1])
    states = {label: f["state"] for label, f in final["feeds"].items()}
    assert states == {"Bi-OB": "connected_synced", "Bf-OB": "connected_synced", "Bf-TR": "connected",
                      "Bg-OB": "connected_synced", "Bg3-OB": "connected_synced", "Bg3-PR": "live"}, states
    for key in ("binance:BTCUSDT", "binance-usdm:BTCUSDT", "bitget:BTCUSDT", "bitget-v3:BTCUSDT"):
        book = final["books"][key]
        assert book["valid"] and not book["crossed"] and book["bids"] and book["asks"], key
    assert all(f["gaps"] == 0 and f["ring_drops"] == 0 for f in final["feeds"].values())


@pytest.mark.parametrize("label,venue", [("Bg-PR", ""), ("Bg3-PR", "bitget-v3")])
async def test_bitget_tickers_carry_their_24h_figures(sim: Simulator, label: str, venue: str) -> None:
    """v2 (open24h/high24h/low24h/baseVolume) and v3 (openPrice24h/highPrice24h/lowPrice24h/
    volume24h): a TICKER_DAY record beside the tickers, sent again only when the figures change."""
    from obitui.core.records import decode_day, decode_ticker
    kw = {"venue": venue, "channel": "ticker"} if venue else {}
    async with FeedHarness(sim, label, **kw) as h:
        await h.wait_state(FeedState.LIVE)
        await h.wait_for(lambda: h.count("records") >= 8, 10, "ticker records")
        recs = h.consumer.pop_batch(100_000)
        tickers = [decode_ticker(p) for k, _, p in recs if k == Kind.TICKER]
        days = [decode_day(p) for k, _, p in recs if k == Kind.TICKER_DAY]
        assert tickers and days and len(days) <= len(tickers)
        assert all(b == 0 for b, *_ in days)                             # the feed's one book id
        for _, exch, open_, high, low, volume in days:
            assert exch > 0 and 0 < low <= high and open_ > 0 and volume > 0
        assert all(a[2:] != b[2:] for a, b in zip(days, days[1:]))     # each one a change
        assert h.count("parse_errors") == 0 and h.count("out_of_range") == 0
