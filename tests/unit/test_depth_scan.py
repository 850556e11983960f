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
from obitui.feeds.binance import DepthFormatError, DepthSync, parse_depth_event

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


def recorded_depth_frames(data: Path) -> list[str]:
    out = []
    for name in ("BINANCE.ws.1.0", "BINANCE_FUTURES.ws.1.0"):
        for line in (data / "recorded" / name).read_text().splitlines():
            m = re.match(r"^[0-9.]+: (\{.*\})$", line)
            if m and "depthUpdate" in m.group(1):
                out.append(m.group(1))
    return out


def test_every_recorded_depth_frame_scans_like_orjson(test_data: Path) -> None:
    frames = recorded_depth_frames(test_data)
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


def test_recorded_frames_take_the_exact_layout_path(test_data: Path) -> None:
    """Binance's own byte layout is read by fixed-string compares; a blank or another key
    order still scans, by the general scanner."""
    b = OrderBook(8)
    for f in recorded_depth_frames(test_data):
        assert b.scan_binance_depth(f) is not None and b.scan_layout == 1, f[:120]
        raw = json.dumps(json.loads(f)["data"], separators=(",", ":"))
        assert b.scan_binance_depth(raw) is not None and b.scan_layout == 1, raw[:120]
        spaced = json.dumps(json.loads(f))
        assert b.scan_binance_depth(spaced) is not None and b.scan_layout == 2, spaced[:120]
    assert b.scan_binance_depth('{"e":"depthUpdate"}') is None and b.scan_layout == 0


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


def _frame(U: int, u: int, pu: int | None, futures: bool) -> str:
    data: dict = {"e": "depthUpdate", "E": 1}
    if futures:
        data["T"] = 1                          # Binance's order: e E T s U u pu b a
    data.update({"s": "X", "U": U, "u": u})
    if futures and pu is not None:
        data["pu"] = pu
    data.update({"b": [["1.5", "2"]], "a": [["2.5", "0"]]})
    return json.dumps({"stream": "x@depth", "data": data}, separators=(",", ":"))


ids = st.integers(min_value=0, max_value=40)


@settings(max_examples=600, deadline=None)
@given(futures=st.booleans(), awaiting=st.booleans(), bid=ids, U=ids, span=st.integers(0, 5),
       pu=st.one_of(st.none(), ids))
def test_one_call_applies_exactly_what_the_sync_rules_apply(futures: bool, awaiting: bool, bid: int,
                                                            U: int, span: int, pu: int | None) -> None:
    """apply_depth_frame applies a frame when, and only when, DepthSync.continuity says it is
    the next event; the book and update_id then equal the slow path's."""
    u = U + span
    text = _frame(U, u, pu, futures)
    fast, slow = OrderBook(8), OrderBook(8)
    for book in (fast, slow):
        book.apply_snapshot([["1.0", "1"]], [["3.0", "1"]])
        book.update_id = bid
    sync = DepthSync(slow, futures=futures)
    sync.synced, sync.awaiting_first, sync.last_u = True, awaiting, bid
    applied = fast.apply_depth_frame(text, futures, awaiting, True)
    assert applied is not None and fast.scan_layout == 1
    rU, ru, E, rpu = fast.frame_ids
    payload = fast.frame_payload
    assert (rU, ru, E, rpu) == (U, u, 1, pu if futures and pu is not None else -1)
    verdict = sync.continuity(U, u, rpu if rpu >= 0 else None)
    assert applied == (verdict is None)
    if applied:
        want = slow.apply([["1.5", "2"]], [["2.5", "0"]], True)
        sync.applied(u, want)
        assert payload == want
    else:
        assert payload is None
    assert fast.update_id == slow.update_id
    assert fast.top(10) == slow.top(10)


def test_one_call_declines_and_guards() -> None:
    b = OrderBook(8)
    assert b.frame_ids is None and b.frame_payload is None
    assert b.apply_depth_frame(b'{"e":"depthUpdate","U":1,"u":2,"b":[["1","1"]],"a":[]}', pack=False) is True
    assert b.frame_ids == (1, 2, 0, -1) and b.frame_payload is None
    assert b.update_id == 2 and len(b) == 1
    assert b.apply_depth_frame('{"e":"depthUpdate","U":3,"u":3,"b":[],"a":[["5","2"]]}') is True
    assert b.frame_payload == OrderBook(8).apply([], [["5", "2"]], True)
    assert b.apply_depth_frame("not json") is None
    assert b.frame_ids is None and b.frame_payload is None     # nothing kept from a declined frame
    b.update_id = 2**64 - 1                    # no id can follow: the rules decide, nothing applied
    assert b.apply_depth_frame('{"e":"depthUpdate","U":3,"u":4,"b":[["2","1"]],"a":[]}') is False
    assert b.frame_ids == (3, 4, 0, -1) and b.frame_payload is None
    assert len(b) == 2
    assert b.apply_depth_frame(123) is None and b.frame_ids is None
