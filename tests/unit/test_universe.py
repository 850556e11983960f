"""``--symbols``: a list of markets or ``top:N`` (issue #19), and what ``top_symbols`` says when it
cannot rank (the ranking itself runs against the simulator: tests/integration/test_universe.py)."""
from __future__ import annotations

import pytest

from obitui.feeds.symbols import SymbolInfoError
from obitui.feeds.universe import MAX_TOP, UniverseError, parse_symbols, top_symbols
from obitui.feeds.venue import Venue, venue


@pytest.mark.timeout(10)
@pytest.mark.parametrize("text,expected", [
    ("BTCUSDT,ETHUSDT", ["BTCUSDT", "ETHUSDT"]),
    (" btcusdt , EthUsdt ,", ["BTCUSDT", "ETHUSDT"]),
    ("ETHUSDT,BTCUSDT,ETHUSDT,btcusdt", ["ETHUSDT", "BTCUSDT"]),     # duplicates dropped, order kept
    ("1000SATSUSDT", ["1000SATSUSDT"]),
    ("top:150", 150),
    ("TOP:1", 1),
    (" top: 1000 ", MAX_TOP),
])
def test_parse_symbols(text: str, expected: list[str] | int) -> None:
    assert parse_symbols(text) == expected


@pytest.mark.timeout(10)
@pytest.mark.parametrize("text,says", [
    ("top:0", "1 to 1000"),
    ("top:1001", "1 to 1000"),
    ("top:-3", "1 to 1000"),
    ("top:ten", "whole number"),
    ("top:", "whole number"),
    ("best:5", "top:N"),
    ("BTC-USDT", "letters and digits"),
    ("BTCUSDT,ETH/USDT", "letters and digits"),
    ("", "no symbol"),
    (" , ,", "no symbol"),
])
def test_parse_symbols_says_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_symbols(text)


@pytest.mark.timeout(30)
def test_a_venue_that_does_not_answer_is_named() -> None:
    # nothing listens on port 9 of loopback: a refused connection, as a venue that is down
    with pytest.raises(UniverseError, match=r"^bitget at http://127\.0\.0\.1:9 did not list its markets") as err:
        top_symbols(10, [(venue("bitget"), "http://127.0.0.1:9")])
    assert isinstance(err.value, SymbolInfoError)


@pytest.mark.timeout(10)
def test_top_symbols_needs_a_venue_and_a_positive_count() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        top_symbols(0, [(venue("binance"), "http://127.0.0.1:9")])
    with pytest.raises(UniverseError, match="no venue"):
        top_symbols(5, [])
    bare = Venue(name="bare", exchange="bare", title="Bare", label_prefix="B", ws_url="ws://x",
                 rest_url="http://127.0.0.1:9", channels=())
    with pytest.raises(UniverseError, match="bare at .* no market list for venue bare"):
        top_symbols(5, [(bare, bare.rest_url)])
