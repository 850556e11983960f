"""``--symbols top:N`` against the simulator's venues (issue #19): ``top_symbols`` reads each
venue's market list and tickers over REST (blocking, in a thread, as at start) and keeps the
markets quoted in USDT and trading on every venue, most traded first by the sum of their 24 h
quote volumes; it names a venue that does not answer and says when fewer markets qualify."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from obitui.feeds.universe import UniverseError, top_symbols
from obitui.feeds.venue import venue
from obitui.sim import universe as uni
from obitui.sim.server import SimConfig, Simulator

SPOT, USDM, V2, V3 = venue("binance"), venue("binance-usdm"), venue("bitget"), venue("bitget-v3")


async def started(symbols: tuple[str, ...]) -> Simulator:
    s = Simulator(SimConfig(seed=4, rate=5.0, depth=300, symbols=symbols))
    await s.start()
    return s


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    # the markets down to the 40th qualifying one, and those ranked among them that do not
    # qualify (other quotes, one venue only)
    s = await started(uni.preset(40))
    try:
        yield s
    finally:
        await s.stop()


@pytest.mark.timeout(60)
async def test_top_n_quoted_in_usdt_on_both_venues_by_their_summed_volume(sim: Simulator) -> None:
    listed = {"binance": await asyncio.to_thread(SPOT.markets, sim.binance_rest_url),
              "bitget": await asyncio.to_thread(V2.markets, sim.bitget_rest_url)}
    assert set(listed["binance"]) == set(sim.models("binance"))
    assert set(listed["bitget"]) == set(sim.models("bitget"))
    # what the filter leaves out is there: other quotes, and markets on one venue only
    assert {q for q, _ in listed["binance"].values()} > {"USDT"}
    assert set(listed["binance"]) ^ set(listed["bitget"])
    got = await asyncio.to_thread(top_symbols, 40, [(SPOT, sim.binance_rest_url), (V2, sim.bitget_rest_url)])
    assert got == uni.top(40)
    for sym in got:
        assert listed["binance"][sym][0] == listed["bitget"][sym][0] == "USDT"
    summed = {s: listed["binance"][s][1] + listed["bitget"][s][1] for s in got}
    assert all(summed[a] >= summed[b] for a, b in zip(got, got[1:]))
    # the sum decides, not one venue's volume
    by_binance = sorted(got, key=lambda s: -listed["binance"][s][1])
    assert by_binance != got
    # the top 10 is the head of the top 40
    spot = [(SPOT, sim.binance_rest_url), (V2, sim.bitget_rest_url)]
    assert await asyncio.to_thread(top_symbols, 10, spot) == got[:10]
    # Bitget v2 and v3 read one list: counted once, the same answer
    both = [(SPOT, sim.binance_rest_url), (V2, sim.bitget_rest_url), (V3, sim.bitget_rest_url)]
    assert await asyncio.to_thread(top_symbols, 40, both) == got
    # within the venues' REST limits: exchangeInfo and tickers once per venue and call
    assert sim.violations == {}


@pytest.mark.timeout(60)
async def test_usdm_too_keeps_the_markets_with_a_perpetual(sim: Simulator) -> None:
    venues = [(SPOT, sim.binance_rest_url), (USDM, sim.binance_rest_url), (V2, sim.bitget_rest_url)]
    got = await asyncio.to_thread(top_symbols, 15, venues)
    usdm = set(sim.models("binance-usdm"))
    expected = [s for s in uni.top(1000, ("binance", "binance-usdm", "bitget")) if s in usdm][:15]
    assert got == expected and set(got) <= usdm
    assert got != uni.top(15)       # some of the spot top have no perpetual


@pytest.mark.timeout(60)
async def test_fewer_markets_than_asked_are_what_qualifies_with_a_warning(
        sim: Simulator, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="obitui.universe"):
        got = await asyncio.to_thread(top_symbols, 1000, [(SPOT, sim.binance_rest_url), (V2, sim.bitget_rest_url)])
    assert got == uni.top(40)
    assert "top 1000: only 40 markets quoted in USDT are listed on binance and bitget; watching those 40" \
        in caplog.messages


@pytest.mark.timeout(60)
async def test_a_venue_down_or_no_market_in_common_is_an_error(sim: Simulator) -> None:
    with pytest.raises(UniverseError, match=r"^bitget at http://127\.0\.0\.1:9 did not list its markets"):
        await asyncio.to_thread(top_symbols, 5, [(SPOT, sim.binance_rest_url), (V2, "http://127.0.0.1:9")])
    # a simulator whose markets are each on one venue, or not quoted in USDT
    odd = tuple(m.symbol for m in uni.universe() if not uni.qualifies(m))[:12]
    other = await started(odd)
    try:
        assert other.models("binance") and other.models("bitget")
        with pytest.raises(UniverseError, match="no market quoted in USDT is listed on binance and bitget"):
            await asyncio.to_thread(top_symbols, 5, [(SPOT, other.binance_rest_url), (V2, other.bitget_rest_url)])
        # one venue alone: its USDT markets, by its own volume
        alone = await asyncio.to_thread(top_symbols, 5, [(SPOT, other.binance_rest_url)])
        usdt = [m for m in uni.universe() if m.symbol in odd and m.quote == "USDT" and "binance" in m.specs]
        assert alone == [m.symbol for m in sorted(usdt, key=lambda m: -m.volume["binance"])][:5] and alone
    finally:
        await other.stop()
