"""The raw-frame scanner for Binance depth frames: on every frame it either gives exactly what
orjson + the book's batch path give, or declines (None) and leaves the frame to that path."""
from __future__ import annotations

import json
import re
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from obitui.core.book import OrderBook
from obitui.feeds.binance import DepthFormatError, parse_depth_event

pytestmark = pytest.mark.timeout(120)


def slow(frame: str | bytes) -> tuple | None:
    """What the feed's orjson path makes of a frame: (U, u, E, pu, bids, asks) or None."""
    try:
        msg = orjson.loads(frame)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(msg, dict):
        return None
    data = msg.get("data", msg)
    if not isinstance(data, dict):
        return None
    try:
        ev = parse_depth_event(data)
    except DepthFormatError:
        return None
    return ev, data.get("pu", -1)


def both(frame: str | bytes) -> None:
    fast_book, slow_book = OrderBook(8), OrderBook(8)
    res = fast_book.scan_binance_depth(frame)
    ref = slow(frame)
    if res is None:
        return                               # declined: the orjson path decides
    assert ref is not None, f"the scanner accepted what orjson rejects: {frame!r:.200}"
    ev, pu = ref
    U, u, E, spu, nb, na = res
    assert (U, u, E, spu) == (ev.first_id, ev.last_id, ev.event_time_ms, pu)
    try:
        want = slow_book.apply(ev.bids, ev.asks, True)
    except (ValueError, TypeError):
        raise AssertionError(f"the scanner accepted levels the book rejects: {frame!r:.200}") from None
    assert fast_book.apply_scanned(True) == want
    assert fast_book.top(50) == slow_book.top(50)


def recorded_depth_frames(shared: Path) -> list[str]:
    out = []
    for name in ("BINANCE.ws.1.0", "BINANCE_FUTURES.ws.1.0"):
        for line in (shared / "recorded" / name).read_text().splitlines():
            m = re.match(r"^[0-9.]+: (\{.*\})$", line)
            if m and "depthUpdate" in m.group(1):
                out.append(m.group(1))
    return out


def test_every_recorded_depth_frame_scans_like_orjson(shared_data: Path) -> None:
    frames = recorded_depth_frames(shared_data)
    assert len(frames) > 150
    accepted = 0
    for f in frames:
        both(f)
        both(f.encode())
        accepted += OrderBook(8).scan_binance_depth(f) is not None
        # the raw stream shape (no "stream"/"data" wrapper) too
        data = json.dumps(json.loads(f)["data"], separators=(",", ":"))
        both(data)
    assert accepted == len(frames)           # the real shape is never declined


def test_declines_what_it_does_not_read() -> None:
    b = OrderBook(8)
    base = '{"e":"depthUpdate","E":1,"s":"X","U":5,"u":7,"b":[["1.0","2.0"]],"a":[["1.5","0"]]}'
    assert b.scan_binance_depth(base) == (5, 7, 1, -1, 1, 1)
    for bad in [base.replace('"1.0"', '"1\\u002e0"'),          # an escape
                base.replace('"U":5', '"U":5.0'),              # a float id
                base.replace('"U":5', '"U":"5"'),              # a string id
                base.replace('depthUpdate', 'trade'),
                base.replace('"U":5', '"U":9'),                # U > u
                base.replace('[["1.0","2.0"]]', '[["1.0","2.0","3"]]'),
                base.replace('[["1.0","2.0"]]', '[["-1.0","2.0"]]'),
                base.replace('[["1.0","2.0"]]', '[["0","2.0"]]'),
                base[:-1], base + "x", "", "{}", "[]",
                '{"stream":"x","data":{"data":{}}}',
                base.replace('"b":[["1.0","2.0"]],"a":[["1.5","0"]]', '"a":[["1.5","0"]],"b":[["1.0","2.0"]]'),
                base.replace('"s":"X"', '"s":{"x":1}'),
                '{"U":5,"u":7,"e":"depthUpdate","data":{"E":1,"b":[],"a":[]}}',    # ids beside "data"
                '{"data":{"e":"depthUpdate","U":5,"u":7,"b":[],"a":[]},"U":9}',
                base.replace('"e":"depthUpdate"', '"e":"depthUpdate","e":"trade"'),
                base.replace('"e":"depthUpdate"', '"e":5')]:
        assert b.scan_binance_depth(bad) is None, bad
        both(bad)
    with pytest.raises(ValueError):
        OrderBook(8).apply_scanned()


text_piece = st.sampled_from(['"', '\\', ',', ':', '[', ']', '{', '}', '0', '1', '.', 'e', '-', ' ', 'U', 'u',
                              '"b"', '"a"', '"data"', '"depthUpdate"', 'null', 'true', '\u00e9'])


@settings(max_examples=400, deadline=None)
@given(st.lists(text_piece, max_size=80), st.integers(min_value=0, max_value=200), st.booleans())
def test_mutated_frames_scan_like_orjson_or_decline(pieces: list[str], at: int, as_bytes: bool) -> None:
    base = ('{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1700000000000,"s":"BTCUSDT",'
            '"U":100,"u":105,"b":[["27000.01000000","1.50000000"],["26999.99","0"]],'
            '"a":[["27000.02000000","0.25000000"]]}}')
    at = min(at, len(base))
    frame = base[:at] + "".join(pieces) + base[at:]
    both(frame.encode() if as_bytes else frame)


@pytest.mark.parametrize("price", ["1.", ".5", "1e5", "1.000000001", "1.000000000", "00.5", "0.0", "0",
                                   "99999999999", "92233720368.54775807", "92233720368.54775808", "1..0",
                                   "1.5.", " 1.5", "1.5 ", "+1", "-1", "", "1" * 200, "0." + "0" * 130 + "1"])
def test_numbers_at_the_edges_scan_like_parse_fixed(price: str) -> None:
    frame = ('{"e":"depthUpdate","E":1,"s":"X","U":5,"u":7,"b":[["%s","2.0"]],"a":[["3","%s"]]}'
             % (price, price))
    both(frame)
