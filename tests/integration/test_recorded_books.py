"""Books rebuilt from real exchange recordings (tests/data): every Bitget checksum matches,
and the Binance sync procedure accepts the real id sequences with no false gap."""
from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from obitui.capture import convert_cryptofeed
from obitui.core.book import OrderBook
from obitui.feeds.bitget.checksum import bitget_checksum
from obitui.feeds.binance.sync import DepthSync, SyncResult, parse_depth_event, parse_snapshot
from tests.book_model import ModelBook


def _bitget_frames(path: Path):
    for rec in convert_cryptofeed(path):
        msg = orjson.loads(rec.data)
        if isinstance(msg, dict) and msg.get("arg", {}).get("channel") == "books" and "data" in msg:
            yield msg


@pytest.mark.timeout(60)
def test_all_637_bitget_checksums_match(test_data: Path) -> None:
    matched = {}
    for name in ("BITGET.ws.1.0", "BITGET.ws.2.0"):
        books: dict[str, OrderBook] = {}
        models: dict[str, ModelBook] = {}
        n = 0
        for msg in _bitget_frames(test_data / "recorded" / name):
            inst = msg["arg"]["instId"]
            for d in msg["data"]:
                if msg["action"] == "snapshot":
                    books[inst] = OrderBook(8)
                    books[inst].apply_snapshot(d["bids"], d["asks"])
                    models[inst] = ModelBook()
                    models[inst].snapshot(d["bids"], d["asks"])
                else:
                    books[inst].apply(d["bids"], d["asks"])
                    models[inst].apply(d["bids"], d["asks"])
                assert bitget_checksum(books[inst]) == d["checksum"], (name, inst, n)
                assert books[inst].top(25) == models[inst].top(25)
                assert not books[inst].crossed
                n += 1
        matched[name] = n
    assert matched == {"BITGET.ws.1.0": 443, "BITGET.ws.2.0": 194}


def test_bitget_vectors(test_data: Path) -> None:
    vec = test_data / "vectors"
    snap = orjson.loads((vec / "ws_public_depth_snapshot.json").read_bytes())["data"][0]
    upd = orjson.loads((vec / "ws_public_depth_update.json").read_bytes())["data"][0]
    b = OrderBook(8)
    b.apply_snapshot(snap["bids"], snap["asks"])
    assert bitget_checksum(b) == snap["checksum"] == 1431635978
    b.apply(upd["bids"], upd["asks"])
    assert bitget_checksum(b) == upd["checksum"] == 1212953002
    bids, asks = b.top(10)
    assert ("100.10", bids[0][1]) == bids[0] and "99.50" not in [p for p, _ in bids]


def test_bitget_2026_frames_chain_and_apply(test_data: Path) -> None:
    frames = [orjson.loads(line) for line in
              (test_data / "vectors" / "bitget_v2_v3_frames_2026.jsonl").read_bytes().splitlines()
              if line.strip()]
    book = OrderBook(8)
    prev_seq = None
    for msg in frames:
        if msg.get("action") not in ("snapshot", "update") or "channel" not in msg.get("arg", {}):
            continue  # acks, errors and the v3 frame are the feed parser's business
        d = msg["data"][0]
        assert "checksum" not in d
        if msg["action"] == "snapshot":
            assert d["pseq"] == 0
            book.apply_snapshot(d["bids"], d["asks"])
        else:
            assert d["pseq"] == prev_seq
            book.apply(d["bids"], d["asks"])
        prev_seq = d["seq"]
    assert book.top(1) == ([("0.01038", "4311.15")], [("0.01039", "4499.23")])
    assert len(book.bids) == 5 and len(book.asks) == 3


def _binance_session(test_data: Path, http: str, ws: str):
    snaps = {}
    for rec in convert_cryptofeed(test_data / "recorded" / http):
        symbol = rec.url.split("symbol=")[1].split("&")[0]
        snaps[symbol] = orjson.loads(rec.data)
    events = []
    for rec in convert_cryptofeed(test_data / "recorded" / ws):
        msg = orjson.loads(rec.data)
        if msg.get("data", {}).get("e") == "depthUpdate":
            events.append((rec.t, msg["data"]))
    return snaps, events


@pytest.mark.parametrize("futures", [False, True])
def test_binance_recordings_sync_without_false_gaps(test_data: Path, futures: bool) -> None:
    http, ws = (("BINANCE_FUTURES.http.0.0", "BINANCE_FUTURES.ws.1.0") if futures
                else ("BINANCE.http.0.0", "BINANCE.ws.1.0"))
    snaps, events = _binance_session(test_data, http, ws)
    syncs: dict[str, DepthSync] = {}
    models: dict[str, ModelBook] = {}
    results: dict[str, list[SyncResult]] = {}
    snap_t = {}
    for rec in convert_cryptofeed(test_data / "recorded" / http):
        snap_t[rec.url.split("symbol=")[1].split("&")[0]] = rec.t
    # feed events in receive order; deliver each symbol's snapshot at its recorded receive time
    delivered: set[str] = set()
    for t, data in events:
        sym = data["s"]
        sync = syncs.setdefault(sym, DepthSync(OrderBook(8), futures=futures))
        if sym not in delivered and sym in snaps and t >= snap_t[sym]:
            last_id, bids, asks = parse_snapshot(snaps[sym])
            results.setdefault(sym, []).append(sync.on_snapshot(last_id, bids, asks))
            models[sym] = ModelBook()
            models[sym].snapshot(bids, asks)
            delivered.add(sym)
        ev = parse_depth_event(data)
        results.setdefault(sym, []).append(sync.on_event(ev))
    assert len(delivered) == 4, delivered
    for sym in delivered:
        assert SyncResult.GAP not in results[sym], (sym, syncs[sym].gap_detail)
        assert SyncResult.SYNCED in results[sym]
        assert syncs[sym].book.valid
        # the reference model: snapshot + every event that ends after lastUpdateId, in order
        last_id = snaps[sym]["lastUpdateId"]
        model = ModelBook()
        model.snapshot(snaps[sym]["bids"], snaps[sym]["asks"])
        applied_ids = []
        for _, data in events:
            if data["s"] == sym and data["u"] > last_id - (1 if futures else 0):
                model.apply(data["b"], data["a"])
                applied_ids.append(data["u"])
        assert syncs[sym].book.top(10_000) == model.top(10_000), sym
        assert syncs[sym].book.update_id == (applied_ids[-1] if applied_ids else last_id)


def test_binance_first_kept_event_is_last_update_id_plus_one(test_data: Path) -> None:
    """Real data contradicts the docs' 'lastUpdateId within [U;u]': the first kept event
    starts right after the snapshot."""
    snaps, events = _binance_session(test_data, "BINANCE.http.0.0", "BINANCE.ws.1.0")
    last = snaps["NKNUSDT"]["lastUpdateId"]
    first_kept = next(d for _, d in events if d["s"] == "NKNUSDT" and d["u"] > last)
    assert first_kept["U"] == last + 1


def test_snapshot_right_before_the_first_event_is_not_stale() -> None:
    sync = DepthSync(OrderBook(8))
    ev = parse_depth_event({"e": "depthUpdate", "U": 8, "u": 10, "b": [["1.0", "2"]], "a": []})
    assert sync.on_event(ev) is SyncResult.BUFFERED
    assert sync.on_snapshot(7, [["1.0", "1"]], [["2.0", "1"]]) is SyncResult.SYNCED
    assert sync.book.update_id == 10 and sync.book.best_bid() == ("1.0", "2")
    futures = DepthSync(OrderBook(8), futures=True)
    futures.on_event(parse_depth_event({"e": "depthUpdate", "U": 8, "u": 10, "pu": 5, "b": [], "a": []}))
    assert futures.on_snapshot(7, [["1.0", "1"]], [["2.0", "1"]]) is SyncResult.STALE_SNAPSHOT


def test_binance_gap_is_detected_and_resync_keeps_buffering() -> None:
    sync = DepthSync(OrderBook(8))
    ev = lambda U, u, b: parse_depth_event({"e": "depthUpdate", "U": U, "u": u, "b": b, "a": []})  # noqa: E731
    assert sync.on_event(ev(8, 10, [["1.0", "1"]])) is SyncResult.BUFFERED
    assert sync.on_snapshot(5, [["0.9", "1"]], [["2.0", "1"]]) is SyncResult.STALE_SNAPSHOT
    assert sync.on_snapshot(6, [["0.9", "1"]], [["2.0", "1"]]) is SyncResult.STALE_SNAPSHOT
    assert sync.on_snapshot(9, [["0.9", "1"]], [["2.0", "1"]]) is SyncResult.SYNCED
    assert sync.book.update_id == 10 and sync.book.valid
    assert sync.on_event(ev(11, 12, [])) is SyncResult.APPLIED
    assert sync.on_event(ev(11, 12, [])) is SyncResult.ALREADY_APPLIED   # duplicate
    assert sync.on_event(ev(12, 14, [["1.1", "2"]])) is SyncResult.APPLIED  # overlapping
    assert sync.on_event(ev(16, 17, [])) is SyncResult.GAP
    assert not sync.book.valid and "1 update ids missing" in sync.gap_detail
    assert sync.on_event(ev(18, 19, [])) is SyncResult.BUFFERED
    assert sync.on_snapshot(18, [["1.0", "3"]], [["2.0", "1"]]) is SyncResult.SYNCED
    assert sync.book.update_id == 19
