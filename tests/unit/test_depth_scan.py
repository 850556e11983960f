"""The raw-frame scanner for Binance depth frames (DepthScanner): on every frame it either gives
exactly what orjson + the book's batch path give, or declines (None) and leaves the frame to that
path; and scan + DepthSync.continuity + apply is the sync procedure's own path."""
from __future__ import annotations

import json
import re
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from obitui.core.book import OrderBook
from obitui.feeds.binance._scan import DepthScanner
from obitui.feeds.binance.sync import DepthFormatError, DepthSync, SyncResult, parse_depth_event

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
    scanner = DepthScanner(fast_book)
    res = scanner.scan(frame)
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
    assert len(fast_book) == 0               # a scan leaves the book alone until apply
    assert scanner.apply(True) == want
    assert fast_book.top(50) == slow_book.top(50)
    assert (fast_book.levels_applied, fast_book.crossed) == (slow_book.levels_applied, slow_book.crossed)


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
        accepted += DepthScanner(OrderBook(8)).scan(f) is not None
        # the raw stream shape (no "stream"/"data" wrapper) too
        data = json.dumps(json.loads(f)["data"], separators=(",", ":"))
        both(data)
    assert accepted == len(frames)           # the real shape is never declined


def test_recorded_frames_take_the_exact_layout_path(test_data: Path) -> None:
    """Binance's own byte layout is read by fixed-string compares; a blank or another key
    order still scans, by the general scanner."""
    b = DepthScanner(OrderBook(8))
    for f in recorded_depth_frames(test_data):
        assert b.scan(f) is not None and b.layout == 1, f[:120]
        raw = json.dumps(json.loads(f)["data"], separators=(",", ":"))
        assert b.scan(raw) is not None and b.layout == 1, raw[:120]
        spaced = json.dumps(json.loads(f))
        assert b.scan(spaced) is not None and b.layout == 2, spaced[:120]
    assert b.scan('{"e":"depthUpdate"}') is None and b.layout == 0


def test_declines_what_it_does_not_read() -> None:
    b = DepthScanner(OrderBook(8))
    base = '{"e":"depthUpdate","E":1,"s":"X","U":5,"u":7,"b":[["1.0","2.0"]],"a":[["1.5","0"]]}'
    assert b.scan(base) == (5, 7, 1, -1, 1, 1)
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
        assert b.scan(bad) is None, bad
        both(bad)
    with pytest.raises(ValueError):
        DepthScanner(OrderBook(8)).apply()


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


def _frame(U: int, u: int, pu: int | None, futures: bool, bids: list | None = None,
           asks: list | None = None) -> str:
    data: dict = {"e": "depthUpdate", "E": 1}
    if futures:
        data["T"] = 1                          # Binance's order: e E T s U u pu b a
    data.update({"s": "X", "U": U, "u": u})
    if futures and pu is not None:
        data["pu"] = pu
    data.update({"b": [["1.5", "2"]] if bids is None else bids,
                 "a": [["2.5", "0"]] if asks is None else asks})
    return json.dumps({"stream": "x@depth", "data": data}, separators=(",", ":"))


ids = st.integers(min_value=0, max_value=40)
side_levels = st.lists(st.tuples(st.sampled_from(["1.5", "1.25", "2", "2.5", "3", "0.75", "4.125"]),
                                 st.sampled_from(["0", "1", "2.50", "0.001"])).map(list), max_size=3)
# an event as offsets from the book: U from update_id + 1, u from U, pu from the last applied u
events = st.lists(st.tuples(st.integers(-3, 2), st.integers(0, 4), st.one_of(st.none(), st.integers(-2, 1)),
                            side_levels, side_levels), min_size=1, max_size=8)


@settings(max_examples=400, deadline=None)
@given(futures=st.booleans(), awaiting=st.booleans(), bid=ids, seq=events)
def test_scan_continuity_apply_is_the_sync_path(futures: bool, awaiting: bool, bid: int, seq: list) -> None:
    """What the synced feed runs on a frame (scan, DepthSync.continuity on the scanned ids,
    apply when it says the event is the next, then DepthSync.applied) gives the same verdicts,
    the same book, update id and ring payloads as the orjson path through DepthSync.on_event,
    over sequences of spot and futures events, right after a snapshot or later."""
    fast, slow = OrderBook(8), OrderBook(8)
    fsync, ssync = DepthSync(fast, futures=futures, pack=True), DepthSync(slow, futures=futures, pack=True)
    for book, sync in ((fast, fsync), (slow, ssync)):
        book.apply_snapshot([["1.0", "1"]], [["3.0", "1"]])
        book.update_id = bid
        book.valid = True
        sync.synced, sync.awaiting_first, sync.last_u = True, awaiting, bid
    scanner = DepthScanner(fast)
    for dU, span, dpu, bids, asks in seq:
        U = max(0, slow.update_id + 1 + dU)
        u = U + span
        pu = None if dpu is None else max(0, ssync.last_u + dpu)
        text = _frame(U, u, pu, futures, bids, asks)
        got = scanner.scan(text)
        assert got is not None and scanner.layout == 1 and scanner.ids == got
        rU, ru, E, rpu, nb, na = got
        assert (rU, ru, E, rpu, nb, na) == (U, u, 1, pu if futures and pu is not None else -1, len(bids), len(asks))
        verdict = fsync.continuity(rU, ru, rpu if rpu >= 0 else None)
        if verdict is None:
            fsync.applied(ru, scanner.apply(True))
            verdict = SyncResult.APPLIED
        assert verdict == ssync.on_event(parse_depth_event(orjson.loads(text)["data"]))
        assert fsync.last_packed == ssync.last_packed
        assert (fast.update_id, fast.valid, fsync.last_u, fsync.synced, fsync.awaiting_first) == (
            slow.update_id, slow.valid, ssync.last_u, ssync.synced, ssync.awaiting_first)
        assert fast.top(10) == slow.top(10)
        assert (fast.levels_applied, fast.crossed, fast.crossed_count) == (
            slow.levels_applied, slow.crossed, slow.crossed_count)
        if not ssync.synced:
            break                              # a gap: both wait for a new snapshot


def test_scan_and_apply_guards() -> None:
    b = OrderBook(8)
    sc = DepthScanner(b)
    assert sc.book is b and sc.ids is None and sc.layout == 0
    with pytest.raises(ValueError):
        sc.apply()                              # nothing scanned yet
    assert sc.scan(b'{"e":"depthUpdate","U":1,"u":2,"b":[["1","1"]],"a":[]}') == (1, 2, 0, -1, 1, 0)
    assert sc.ids == (1, 2, 0, -1, 1, 0) and len(b) == 0          # a scan leaves the book alone
    assert sc.apply(pack=False) is None
    assert len(b) == 1 and b.levels_applied == 1 and b.update_id == 0   # the caller sets update_id
    with pytest.raises(ValueError):
        sc.apply()                              # a scanned frame is applied once
    assert sc.scan('{"e":"depthUpdate","U":3,"u":3,"b":[],"a":[["5","2"]]}') == (3, 3, 0, -1, 0, 1)
    assert sc.apply() == OrderBook(8).apply([], [["5", "2"]], True)
    assert sc.scan('{"e":"depthUpdate","U":4,"u":4,"b":[["2","1"]],"a":[]}') is not None
    assert sc.scan("not json") is None
    assert sc.ids is None and sc.layout == 0    # nothing kept from a declined frame
    with pytest.raises(ValueError):
        sc.apply()                              # not even the frame scanned before it
    assert len(b) == 2
    b.update_id = 2**64 - 1                     # no id can follow: the rules apply nothing
    sync = DepthSync(b)
    sync.synced = True
    got = sc.scan('{"e":"depthUpdate","U":3,"u":4,"b":[["2","1"]],"a":[]}')
    assert got == (3, 4, 0, -1, 1, 0)
    assert sync.continuity(got[0], got[1], None) is SyncResult.ALREADY_APPLIED
    assert len(b) == 2
    assert sc.scan(123) is None and sc.ids is None
    with pytest.raises(TypeError):
        DepthScanner(None)  # type: ignore[arg-type]


def test_stub_names_every_public_attribute() -> None:
    """obitui/feeds/binance/_scan.pyi is what editors and type checkers see: it must not fall behind."""
    import ast

    import obitui.feeds.binance._scan as mod
    tree = ast.parse(Path(mod.__file__).with_name("_scan.pyi").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "DepthScanner")
    stub = {n.name for n in cls.body if isinstance(n, ast.FunctionDef)} | {
        n.target.id for n in cls.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
    public = {n for n in dir(DepthScanner) if not n.startswith("_")}
    assert public <= stub, public - stub
