"""Per-symbol fixed-point scales (issue #17 point 6): prices and quantities at the decimals of
the symbol's tick and step sizes, read from the venue's symbol info, so a memecoin's 1e11-unit
levels fit int64; a value that does not fit is a counted out_of_range reject and an invalid
book, never a wrapped number."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from obitui.config import load_config
from obitui.core.book import OrderBook
from obitui.core.fixed import FixedRangeError, parse_fixed
from obitui.core.stats import FeedState
from obitui.feeds.symbols import Scales, SymbolInfoError, apply_venue_scales, venue_scales, step_decimals
from obitui.sim.server import SimConfig, Simulator
from tests.integration.feed_harness import FeedHarness

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    s = Simulator(SimConfig(seed=8, rate=50.0, depth=300, symbols=("BTCUSDT", "PEPEUSDT")))
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


@pytest.mark.parametrize("step,decimals", [("0.01000000", 2), ("1.00000000", 0), ("0.1", 1), ("0.00000001", 8),
                                           ("10", 0), ("0.00010000", 4)])
def test_step_decimals(step: str, decimals: int) -> None:
    assert step_decimals(step) == decimals


@pytest.mark.parametrize("bad", ["0", "-0.01", "abc", "NaN", "Infinity"])
def test_step_decimals_refuses_what_is_not_a_step(bad: str) -> None:
    with pytest.raises(SymbolInfoError):
        step_decimals(bad)


def test_a_memecoin_quantity_needs_its_own_scale() -> None:
    # 1.5e11 units: beyond int64 at 8 decimals (9.2e10), exact at the step size's 0
    with pytest.raises(FixedRangeError):
        parse_fixed("150000000000.00000000", 8)
    book = OrderBook(8, 0)
    book.apply_snapshot([["0.00001234", "150000000000.00000000"]], [["0.00001235", "920000000000000000"]])
    assert book.top(1) == ([("0.00001234", "150000000000.00000000")], [("0.00001235", "920000000000000000")])
    assert book.qty_digits == 0 and book.digits == 8
    with pytest.raises(FixedRangeError, match="quantity"):
        OrderBook(8).apply_snapshot([["0.00001234", "150000000000"]], [])
    with pytest.raises(FixedRangeError, match="beyond 0 decimals"):
        book.apply([["0.00001234", "0.5"]], [])       # finer than the step: not rounded
    assert book.top(1)[0] == [("0.00001234", "150000000000.00000000")]   # unchanged


async def test_scales_come_from_the_venues_symbol_info(sim: Simulator) -> None:
    # (a blocking client, as the supervisor runs it; the simulator needs this loop meanwhile)
    assert await asyncio.to_thread(venue_scales, "binance", sim.binance_rest_url, ["BTCUSDT", "PEPEUSDT"]) == {
        "BTCUSDT": Scales(2, 5), "PEPEUSDT": Scales(8, 0)}
    assert await asyncio.to_thread(venue_scales, "bitget", sim.bitget_rest_url, ["BTCUSDT", "PEPEUSDT"]) == {
        "BTCUSDT": Scales(2, 6), "PEPEUSDT": Scales(8, 0)}
    cfg = load_config(None).with_sim(sim.binance_ws_url, sim.binance_rest_url, sim.bitget_ws_url, sim.bitget_rest_url)
    for f in cfg.feeds:
        f.symbol, f.symbols = "PEPEUSDT", ("PEPEUSDT",)
    lines = await asyncio.to_thread(apply_venue_scales, cfg)
    assert [(f.digits, f.qdigits) for f in cfg.feeds] == [(8, 0)] * 4, lines
    # a venue that does not answer leaves the configured scales, and says so
    cfg = load_config(None)
    for f in cfg.feeds:
        f.rest_url = "http://127.0.0.1:9"
    lines = await asyncio.to_thread(apply_venue_scales, cfg)
    assert [(f.digits, f.qdigits) for f in cfg.feeds] == [(8, 8)] * 4
    assert all("symbol info unavailable" in ln for ln in lines) and len(lines) == 2


@pytest.mark.parametrize("label", ["Bi-OB", "Bg-OB"])
async def test_memecoin_book_at_venue_scales_equals_the_truth(sim: Simulator, label: str) -> None:
    async with FeedHarness(sim, label, symbol="PEPEUSDT", digits=8, qty_digits=0) as h:
        await h.wait_state(FeedState.CONNECTED_SYNCED, 15)
        await h.wait_for(lambda: h.book_matches_truth(300), 10, "the book to equal the truth")
        # levels beyond what 8 decimals could hold are in the book, exact
        truth = sim.truth(h.cfg.venue, "PEPEUSDT")
        assert truth is not None
        big = [q for _, q in truth["bids"] + truth["asks"] if int(q.split(".")[0]) >= 10**11]
        assert big, "the simulated market has no level past 1e11 units"
        assert h.count("out_of_range") == 0 and h.count("parse_errors") == 0


@pytest.mark.parametrize("label", ["Bi-OB", "Bg-OB"])
async def test_a_value_beyond_the_scale_is_counted_and_the_book_never_valid(sim: Simulator, label: str) -> None:
    """The same market at a fixed 8 decimals: every snapshot holds a quantity past int64, so the
    book is rejected (counted, logged), marked invalid and resynced; it never shows a wrapped
    number."""
    async with FeedHarness(sim, label, symbol="PEPEUSDT", digits=8, qty_digits=8) as h:
        await h.wait_for(lambda: h.count("out_of_range") >= 2, 20, "out_of_range rejects")
        assert not h.feed.book.valid
        assert h.state != FeedState.CONNECTED_SYNCED
        # resynced: Binance asks for the snapshot again (paced), Bitget resubscribes
        assert h.count("rest_requests" if label == "Bi-OB" else "resyncs") >= 2
