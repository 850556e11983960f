"""Headless output with many markets (issue #19): a book feed of several markets shows
``(synced/markets books)`` in the status line, a single-market feed's segment is exactly as
before; the JSON's books gain ``state`` and ``reason``, its feeds ``books`` and ``books_synced``;
``--books`` keeps only the markets named and ``--levels`` the levels per side.

A real stats block filled by in-test writers (as the feeds and the engine would)."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from obitui import __main__ as cli
from obitui import headless
from obitui.config import Config, FeedConfig, book_plan, feed_book_ids, load_config
from obitui.core.shm import Segment
from obitui.core.stats import BookSlotWriter, FeedSlotWriter, FeedState, StatsBlock, publish_engine
from obitui.headless import select_books, snapshot, status_line

pytestmark = pytest.mark.timeout(60)

SYMS = tuple(f"S{k}USDT" for k in range(150))


def many() -> Config:
    """A depth feed of 150 markets, a trade feed of 2, and the one-market Bitget book feed."""
    return Config(feeds=[FeedConfig("Bi-OB", "binance", "depth", symbols=SYMS),
                         FeedConfig("Bi-TR", "binance", "trade", symbols=SYMS[:2]),
                         FeedConfig("Bg-OB", "bitget", "books", symbols=("BTCUSDT",))])


def fill(stats: StatsBlock, cfg: Config, states: dict[str, FeedState], gauges: dict[str, dict[str, int]],
         valid: set[str] | None = None, reason: dict[str, str] | None = None) -> None:
    ids = feed_book_ids(cfg.feeds)
    for i, f in enumerate(cfg.feeds):
        w = FeedSlotWriter(stats, i, f.label, f.venue, f.stream_name, f.symbol)
        for name, v in gauges.get(f.label, {}).items():
            w.set(name, v)
        w.set_state(states[f.label])
    done: set[int] = set()
    for f, fids in zip(cfg.feeds, ids):
        for key, j in zip(f.book_keys, fids):
            if j in done:
                continue
            done.add(j)
            ok = valid is None or key in valid
            w2 = BookSlotWriter(stats, j, f.label, *key.split(":", 1))
            w2.publish(valid=ok, crossed=False, update_id=j + 1, pdec=2, qdec=3,
                       bids=[(10000 - k, 1000 + k) for k in range(20)] if ok else [],
                       asks=[(10001 + k, 2000 + k) for k in range(20)] if ok else [],
                       obi=0.40406 if ok else 0.0, reason=(reason or {}).get(key, ""))
    publish_engine(stats, records=1, batches=1, records_per_s=0.0, obi_levels=20, wait="block", gaps=0,
                   ring_high_water=[0] * len(cfg.feeds))


@pytest.fixture
def block(shm_name: str) -> Iterator[Any]:
    made: list[StatsBlock] = []

    def make(cfg: Config) -> StatsBlock:
        plan = book_plan(cfg.feeds)
        blk = StatsBlock.create(f"{shm_name}-{len(made)}", len(cfg.feeds), len(plan), book_keys=plan)
        made.append(blk)
        return blk
    yield make
    for b in made:
        b.close()
    for p in Path("/dev/shm").glob(f"{shm_name}-*"):
        Segment.unlink(p.name)


def test_a_feed_of_many_markets_shows_its_books_counts(block: Any) -> None:
    cfg = many()
    for cfg_feed in cfg.feeds:
        cfg_feed.digits = 2
        cfg_feed.qty_digits = 3
    stats = block(cfg)
    states = {"Bi-OB": FeedState.CONNECTED_SYNCED, "Bi-TR": FeedState.CONNECTED, "Bg-OB": FeedState.CONNECTED_SYNCED}
    fill(stats, cfg, states, {"Bi-OB": {"books": 150, "books_synced": 150}})
    snap = snapshot(cfg, stats, [])
    assert status_line(cfg, snap) == ("[Main Status] Bi-OB: connected_synced (150/150 books) | "
                                      "Bi-TR: connected | Bg-OB: connected_synced (OBI:0.4041)")
    states["Bi-OB"] = FeedState.RESYNCING
    fill(stats, cfg, states, {"Bi-OB": {"books": 150, "books_synced": 149}})
    snap = snapshot(cfg, stats, [])
    assert status_line(cfg, snap).startswith("[Main Status] Bi-OB: resyncing (149/150 books) | Bi-TR: connected | ")
    assert (snap["feeds"]["Bi-OB"]["books"], snap["feeds"]["Bi-OB"]["books_synced"]) == (150, 149)
    # the status line reads only the books it shows: the single-market feeds' books
    assert set(snapshot(cfg, stats, [], headless.status_books(cfg), 0)["books"]) == {"bitget:BTCUSDT"}
    # a stale feed says so instead, as before
    snap["feeds"]["Bi-OB"].update(stale=True, age_s=4.26)
    assert status_line(cfg, snap).startswith("[Main Status] Bi-OB: resyncing (stale 4.3s) | ")


def test_single_market_lines_are_unchanged(block: Any) -> None:
    cfg = load_config(None)
    stats = block(cfg)
    states = {"Bi-OB": FeedState.CONNECTED_SYNCED, "Bi-TR": FeedState.CONNECTED,
              "Bg-OB": FeedState.CONNECTED_SYNCED, "Bg-PR": FeedState.LIVE}
    fill(stats, cfg, states, {})
    line = status_line(cfg, snapshot(cfg, stats, []))
    assert line == ("[Main Status] Bi-OB: connected_synced (OBI:0.4041) | Bi-TR: connected | "
                    "Bg-OB: connected_synced (OBI:0.4041) | Bg-PR: live")
    # with the feeds' gauges set the line is the same
    fill(stats, cfg, states, {f.label: {"books": 1, "books_synced": int(f.is_book)} for f in cfg.feeds})
    assert status_line(cfg, snapshot(cfg, stats, [])) == line
    # a hand-made snapshot without the new fields (tests/integration/test_operator_view.py) still reads
    snap = {"feeds": {"Bi-OB": {"state": "connected_synced", "stale": False, "age_s": 0.1}},
            "books": {"binance:BTCUSDT": {"valid": True, "obi": -0.5, "stale": False}}, "engine": None}
    assert status_line(cfg, snap).startswith("[Main Status] Bi-OB: connected_synced (OBI:-0.5000) | Bi-TR: stopped")


def test_json_books_say_state_and_reason_and_feeds_their_books(block: Any) -> None:
    cfg = load_config(None)
    for f in cfg.feeds:
        f.digits, f.qty_digits = 2, 3
    stats = block(cfg)
    states = {"Bi-OB": FeedState.CONNECTED_SYNCED, "Bi-TR": FeedState.CONNECTED,
              "Bg-OB": FeedState.RESYNCING, "Bg-PR": FeedState.LIVE}
    fill(stats, cfg, states, {}, valid={"binance:BTCUSDT"}, reason={"bitget:BTCUSDT": "checksum"})
    snap = json.loads(json.dumps(snapshot(cfg, stats, [])))
    bi, bg = snap["books"]["binance:BTCUSDT"], snap["books"]["bitget:BTCUSDT"]
    assert (bi["state"], bi["reason"], bi["valid"]) == ("synced", "", True)
    assert (bg["state"], bg["reason"], bg["valid"]) == ("invalid", "checksum", False)
    assert bi["bids"][0] == ["100.00", "1.000"] and len(bi["bids"]) == len(bi["asks"]) == 20
    # the feeds' gauges not set (yet): the config's markets and the engine's valid books
    assert {k: (v["books"], v["books_synced"]) for k, v in snap["feeds"].items() if "books" in v} == {
        "Bi-OB": (1, 1), "Bg-OB": (1, 0)}
    # trade and ticker feeds keep no book: they say how many markets they serve
    assert {k: v["markets"] for k, v in snap["feeds"].items()} == {"Bi-OB": 1, "Bi-TR": 1, "Bg-OB": 1, "Bg-PR": 1}
    fill(stats, cfg, states, {"Bg-OB": {"books": 1, "books_synced": 1}}, valid={"binance:BTCUSDT"})
    assert snapshot(cfg, stats, [])["feeds"]["Bg-OB"]["books_synced"] == 1      # the gauge wins
    # the keys of today are all still there
    assert set(snap["feeds"]["Bi-OB"]) >= {"state", "reason", "frames", "gaps", "resyncs", "reconnects",
                                           "ring_fill", "ring_drops", "records", "parse_errors",
                                           "checksum_failures", "stale", "age_s"}
    assert set(bi) == {"valid", "update_id", "obi", "crossed", "bids", "asks", "state", "reason", "stale",
                       # issue #20
                       "mid", "spread_bps", "flow_1s", "trades_1s", "last_trade", "ticker"}


def test_books_and_levels_select_what_the_json_holds(block: Any) -> None:
    cfg = Config(feeds=[FeedConfig("Bi-OB", "binance", "depth", symbols=("BTCUSDT", "ETHUSDT", "SOLUSDT")),
                        FeedConfig("Bg-OB", "bitget", "books", symbols=("BTCUSDT", "ETHUSDT")),
                        FeedConfig("Bi-TR", "binance", "trade", symbols=("XRPUSDT",))])
    stats = block(cfg)
    fill(stats, cfg, {"Bi-OB": FeedState.CONNECTED_SYNCED, "Bg-OB": FeedState.CONNECTED_SYNCED,
                      "Bi-TR": FeedState.CONNECTED}, {})
    # every market a book feed serves (a trade-only market has no book)
    assert list(snapshot(cfg, stats, [])["books"]) == ["binance:BTCUSDT", "binance:ETHUSDT", "binance:SOLUSDT",
                                                        "bitget:BTCUSDT", "bitget:ETHUSDT"]
    assert select_books(cfg, ["ethusdt"]) == ["binance:ETHUSDT", "bitget:ETHUSDT"]
    assert select_books(cfg, ["bitget:BTCUSDT", "SOLUSDT", ""]) == ["bitget:BTCUSDT", "binance:SOLUSDT"]
    for bad in (["DOGEUSDT"], ["XRPUSDT"], ["kraken:BTCUSDT"]):
        with pytest.raises(ValueError, match="no book market"):
            select_books(cfg, bad)
    snap = snapshot(cfg, stats, [], select_books(cfg, ["ETHUSDT"]), 5)
    assert list(snap["books"]) == ["binance:ETHUSDT", "bitget:ETHUSDT"]
    assert all(len(b["bids"]) == 5 and len(b["asks"]) == 5 for b in snap["books"].values())
    assert set(snap["feeds"]) == {"Bi-OB", "Bg-OB", "Bi-TR"}          # the feeds are all there
    snap = snapshot(cfg, stats, [], None, 0)
    assert all(b["bids"] == [] and b["asks"] == [] for b in snap["books"].values())


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []

    def fake_run(cfg: Any, **kw: Any) -> int:
        seen.append(kw)
        return 0

    monkeypatch.setattr(headless, "run", fake_run)
    monkeypatch.setattr(headless, "setup_logging", lambda *a, **k: None)
    return seen


def test_the_flags_reach_headless(runs: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--json"]) == 0
    assert runs[-1]["books"] is None and runs[-1]["levels"] == 20          # the defaults: as before
    assert cli.main(["--json", "--books", "bitget:btcusdt", "--levels", "0"]) == 0
    assert runs[-1]["books"] == ["bitget:BTCUSDT"] and runs[-1]["levels"] == 0
    assert cli.main(["--json", "--books", "BTCUSDT", "--levels", "7"]) == 0
    assert runs[-1]["books"] == ["binance:BTCUSDT", "bitget:BTCUSDT"] and runs[-1]["levels"] == 7
    n = len(runs)
    for argv, says in ((["--levels", "21"], "--levels must be in [0, 20], got 21"),
                       (["--levels", "-1"], "--levels must be in [0, 20], got -1"),
                       (["--books", "NOPEUSDT"], "--books NOPEUSDT: no book market")):
        assert cli.main(["--json", *argv]) == 2
        err = capsys.readouterr().err
        assert says in err and len(err.strip().splitlines()) == 1, err
    assert len(runs) == n


def test_book_json_has_mid_spread_flow_last_trade_and_ticker(tmp_path: Path) -> None:
    """Issue #20's JSON fields per book, exact decimals from the slot the engine writes: mid
    (one more decimal when bid + ask is odd), spread in bps, 1 s flow and trade count, the last
    trade and the venue's ticker with its 24 h figures; none of it invented when absent."""
    from obitui.core.stats import pack_market, pack_tape
    name = f"obitui-{__import__('os').getuid()}-test-hj{__import__('os').getpid()}"
    stats = StatsBlock.create(name, 1, 2)
    try:
        w = BookSlotWriter(stats, 0, "Bg-OB", "bitget", "BTCUSDT")
        packed = b"".join(x.to_bytes(8, "little", signed=True) for x in (10000, 5, 10003, 7))  # 100.00 / 100.03
        w.publish_packed(True, False, 9, 2, 3, packed, 1, 1, 0.25, (3000, 1000, 2, 1),
                         (10001, 500, 2, 1_700_000_000_123_000_000), 0, 4, "",
                         pack_market((1_700_000_000_000_000_000, 10002, 10000, 5, 10003, 7),
                                     (1_700_000_000_000_000_000, 9000, 10500, 8900, 123456), 3),
                         pack_tape([(1_700_000_000_123_000_000, 10001, 500, 2)]))
        bv = stats.read_book(0)
        assert bv is not None and bv.tape == [(1_700_000_000_123_000_000, 10001, 500, 2)] and bv.trades == 3
        j = headless.book_json(bv, 2, 3)
        assert j["mid"] == "100.015" and j["spread_bps"] == round(20000 * 3 / 20003, 4)
        assert j["flow_1s"] == "2.000" and j["trades_1s"] == 3
        assert j["last_trade"] == {"price": "100.01", "qty": "0.500", "side": "sell", "ts": 1700000000.123}
        t = j["ticker"]
        assert (t["last"], t["bid"], t["ask"], t["open_24h"], t["high_24h"], t["low_24h"], t["volume_24h"]) == (
            "100.02", "100.00", "100.03", "90.00", "105.00", "89.00", "123.456")
        assert t["change_24h_pct"] == round(100 * (10002 - 9000) / 9000, 4)
        json.dumps(j)
        # a book with no trades and no ticker: nulls, not zeros
        w2 = BookSlotWriter(stats, 1, "Bi-OB", "binance", "ETHUSDT")
        w2.publish_packed(True, False, 1, 2, 3, packed[:16], 1, 0, 0.0, (0, 0, 0, 0), (0, 0, 0, 0), 0, 1, "")
        j2 = headless.book_json(stats.read_book(1), 2, 3)
        assert j2["mid"] is None and j2["spread_bps"] is None and j2["last_trade"] is None and j2["ticker"] is None
        assert j2["flow_1s"] == "0.000" and j2["trades_1s"] == 0
    finally:
        stats.seg.close()
        Segment.unlink(name)
