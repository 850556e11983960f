"""The real Binance USD-M futures recording (tests/data/recorded/BINANCE_FUTURES.*), converted to
the capture format and replayed through the whole fleet (`obitui --replay`): replay recognises
USD-M by itself, every book syncs by the USD-M rules, and each ends equal to a reference built
here, independently of obitui's sync code."""
from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from obitui.capture import convert_cryptofeed, write_capture
from obitui.replay_config import feeds_from_capture

pytestmark = pytest.mark.timeout(150)

SYMBOLS = ("SUSHIUSDT", "AKROUSDT", "KEEPUSDT", "CTKUSDT")


def _capture(test_data: Path, tmp_path: Path) -> Path:
    recs = [*convert_cryptofeed(test_data / "recorded" / "BINANCE_FUTURES.http.0.0"),
            *convert_cryptofeed(test_data / "recorded" / "BINANCE_FUTURES.ws.1.0")]
    cap = tmp_path / "usdm.jsonl"
    write_capture(cap, sorted(recs, key=lambda r: r.t))
    return cap


def _reference(test_data: Path) -> dict[str, tuple[int, dict[str, list[list[Decimal]]]]]:
    """Per symbol: (last update id, best-first levels) after the REST snapshot and every
    recorded event from the one that covers lastUpdateId (U <= L <= u), checking pu == previous u
    on the way: the USD-M rules, written out plainly."""
    snaps: dict[str, dict] = {}
    for rec in convert_cryptofeed(test_data / "recorded" / "BINANCE_FUTURES.http.0.0"):
        sym = rec.url.split("symbol=")[1].split("&")[0]
        snaps.setdefault(sym, orjson.loads(rec.data))
    books: dict[str, tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]] = {}
    last: dict[str, int] = {}
    for sym, body in snaps.items():
        books[sym] = ({Decimal(p): Decimal(q) for p, q in body["bids"]},
                      {Decimal(p): Decimal(q) for p, q in body["asks"]})
        last[sym] = body["lastUpdateId"]
    started: set[str] = set()
    for rec in convert_cryptofeed(test_data / "recorded" / "BINANCE_FUTURES.ws.1.0"):
        d = orjson.loads(rec.data).get("data", {})
        if d.get("e") != "depthUpdate" or d["s"] not in books:
            continue
        sym = d["s"]
        if sym not in started:
            if d["u"] < last[sym]:
                continue                       # older than the snapshot
            assert d["U"] <= last[sym] <= d["u"], (sym, d["U"], d["u"], last[sym])
            started.add(sym)
        else:
            assert d["pu"] == last[sym], (sym, d["pu"], last[sym])
        for side, key in ((0, "b"), (1, "a")):
            for p, q in d[key]:
                if Decimal(q) == 0:
                    books[sym][side].pop(Decimal(p), None)
                else:
                    books[sym][side][Decimal(p)] = Decimal(q)
        last[sym] = d["u"]
    out = {}
    for sym, (bids, asks) in books.items():
        out[sym] = (last[sym], {"bids": [[p, bids[p]] for p in sorted(bids, reverse=True)],
                                "asks": [[p, asks[p]] for p in sorted(asks)]})
    return out


def test_replay_recognises_usdm(test_data: Path, tmp_path: Path) -> None:
    feeds = feeds_from_capture(str(_capture(test_data, tmp_path)))
    assert {(f.label, f.venue, f.channel, frozenset(f.symbols)) for f in feeds} == {
        (label, "binance-usdm", ch, frozenset(SYMBOLS)) for label, ch in (("Bf-OB", "depth"), ("Bf-TR", "trade"))}
    depth = next(f for f in feeds if f.channel == "depth")
    assert depth.futures and depth.venue_info.depth_path == "/fapi/v1/depth"


def test_real_usdm_recording_replays_to_the_reference_books(test_data: Path, tmp_path: Path) -> None:
    cap = _capture(test_data, tmp_path)
    res = subprocess.run([sys.executable, "-m", "obitui", "--replay", str(cap), "--speed", "0", "--no-ui",
                          "--json", "--duration", "60"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    final = json.loads(res.stdout.splitlines()[-1])
    ref = _reference(test_data)
    feed = final["feeds"]["Bf-OB"]
    assert feed["state"] == "connected_synced" and feed["books_synced"] == feed["books"] == 4, feed
    assert feed["gaps"] == 0 and feed["parse_errors"] == 0, feed
    trades = final["feeds"]["Bf-TR"]
    assert trades["parse_errors"] == 0 and trades["frames"] > 0, trades
    for sym in SYMBOLS:
        book = final["books"][f"binance-usdm:{sym}"]
        last_u, levels = ref[sym]
        assert book["valid"] and book["update_id"] == last_u, (sym, book["update_id"], last_u)
        for side in ("bids", "asks"):
            got = [[Decimal(p), Decimal(q)] for p, q in book[side]]
            assert got == levels[side][:len(got)] and len(got) == min(20, len(levels[side])), (sym, side)
