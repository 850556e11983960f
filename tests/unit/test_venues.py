"""The venue descriptions: every part reads a venue's facts from its description, the core knows
no venue, and no venue URL or label is repeated outside its venue folder."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from obitui.capture import CaptureRecord
from obitui.config import ConfigError, FeedConfig, default_feeds, load_config
from obitui.feeds.base import Feed
from obitui.feeds.venue import FeedSpec, exchange_of_url, load_feed_class, venue, venues

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parents[2]


def test_registry_names_every_api() -> None:
    assert list(venues()) == ["binance", "binance-usdm", "bitget", "bitget-v3"]
    for v in venues().values():
        assert v.channels and v.ws_url and v.rest_url and v.sim_module
        for ch in v.channels:
            cls = load_feed_class(v.name, ch.name)
            assert issubclass(cls, Feed), (v.name, ch.name)
            assert v.label(ch.name) == f"{v.label_prefix}-{ch.label}"
    with pytest.raises(KeyError, match="known: binance, binance-usdm"):
        venue("nope")


def test_default_feeds_come_from_the_descriptions() -> None:
    feeds = default_feeds()
    assert [(f.label, f.venue, f.channel, f.symbol) for f in feeds] == [
        ("Bi-OB", "binance", "depth", "BTCUSDT"), ("Bi-TR", "binance", "trade", "BTCUSDT"),
        ("Bg-OB", "bitget", "books", "BTCUSDT"), ("Bg-PR", "bitget", "ticker", "BTCUSDT")]
    for f in feeds:
        assert (f.ws_url, f.rest_url) == (f.venue_info.ws_url, f.venue_info.rest_url)
    assert feeds[0].stream_name == "btcusdt@depth@100ms" and feeds[2].stream_name == "SPOT:books:BTCUSDT"


def test_new_apis_by_config(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text('[[feeds]]\nlabel = "Bf-OB"\nvenue = "binance-usdm"\nchannel = "depth"\n'
                 '[[feeds]]\nlabel = "Bf-TR"\nvenue = "binance-usdm"\nchannel = "trade"\n'
                 '[[feeds]]\nlabel = "Bg3-OB"\nvenue = "bitget-v3"\nchannel = "books"\n'
                 '[[feeds]]\nlabel = "Old-OB"\nvenue = "binance"\nfutures = true\nchannel = "depth"\nsymbol = "ETHUSDT"\n')
    bf, bt, b3, old = load_config(p).feeds
    assert bf.ws_url == "wss://fstream.binance.com" and bf.rest_url == "https://fapi.binance.com"
    assert bf.channel_info.ws_route == "/public" and bt.channel_info.ws_route == "/market"
    assert bt.stream_name == "btcusdt@aggTrade" and bf.futures
    assert b3.ws_url == "wss://ws.bitget.com/v3/ws/public" and b3.inst_type == "spot"
    assert old.venue == "binance-usdm"          # the old spelling still means USD-M
    bad = tmp_path / "bad.toml"
    bad.write_text('[[feeds]]\nlabel = "X"\nvenue = "binance-usdm"\nchannel = "depth"\nsnapshot_limit = 300\n')
    with pytest.raises(ConfigError, match="snapshot_limit: USD-M depth takes limit 5, 10"):
        load_config(bad)
    bad.write_text('[[feeds]]\nlabel = "X"\nvenue = "bitget-v3"\nchannel = "books"\ninst_type = "SPOT"\n')
    with pytest.raises(ConfigError, match="inst_type"):
        load_config(bad)
    bad.write_text('[[feeds]]\nlabel = "X"\nvenue = "okx"\nchannel = "books"\n')
    with pytest.raises(ConfigError, match="unknown venue 'okx'"):
        load_config(bad)


def test_sim_urls_per_api() -> None:
    cfg = load_config(None)
    cfg.feeds += [FeedConfig("Bf-OB", "binance-usdm", "depth"), FeedConfig("Bg3-OB", "bitget-v3", "books")]
    sim = cfg.with_sim("ws://127.0.0.1:1", "http://127.0.0.1:1", "ws://127.0.0.1:2/v2/ws/public",
                       "http://127.0.0.1:2")
    urls = {f.label: (f.ws_url, f.rest_url) for f in sim.feeds}
    assert urls["Bi-OB"] == urls["Bf-OB"] == ("ws://127.0.0.1:1", "http://127.0.0.1:1")
    assert urls["Bg-OB"] == ("ws://127.0.0.1:2/v2/ws/public", "http://127.0.0.1:2")
    assert urls["Bg3-OB"] == ("ws://127.0.0.1:2/v3/ws/public", "http://127.0.0.1:2")


def test_capture_records_are_recognised_by_their_api() -> None:
    def rec(venue_: str, url: str, data: str) -> CaptureRecord:
        return CaptureRecord(1, venue_, "ws", url, data)
    spot = rec("binance", "wss://stream.binance.com:9443/stream?streams=btcusdt@depth@100ms/btcusdt@trade", "{}")
    usdm = rec("binance", "wss://fstream.binance.com/public/stream?streams=ethusdt@depth@100ms", "{}")
    by_pu = rec("binance", "ws://127.0.0.1:5/stream?streams=ethusdt@depth", '{"data":{"pu":1}}')
    v3 = rec("bitget", "ws://x/v3/ws/public",
             '{"action":"snapshot","arg":{"instType":"spot","topic":"books","symbol":"BTCUSDT"},"data":[]}')
    found = {v.name: [s for r in (spot, usdm, by_pu, v3) for s in v.recognise(r)] for v in venues().values()}
    assert found["binance"] == [FeedSpec("binance", "depth", "BTCUSDT"), FeedSpec("binance", "trade", "BTCUSDT")]
    assert found["binance-usdm"] == [FeedSpec("binance-usdm", "depth", "ETHUSDT")] * 2
    assert found["bitget-v3"] == [FeedSpec("bitget-v3", "books", "BTCUSDT", (("inst_type", "spot"),))]
    assert found["bitget"] == []
    assert exchange_of_url("https://fapi.binance.com/fapi/v1/depth") == "binance"
    assert exchange_of_url("wss://ws.bitget.com/v3/ws/public") == "bitget"
    assert exchange_of_url("https://example.com") is None


def test_the_core_knows_no_venue() -> None:
    """`grep -ril 'binance\\|bitget' obitui/core` finds nothing, built modules included."""
    res = subprocess.run(["grep", "-ril", r"binance\|bitget", str(ROOT / "obitui" / "core")],
                         capture_output=True, text=True)
    assert res.stdout == "", res.stdout


def test_no_venue_url_or_label_outside_its_folder() -> None:
    """Every venue URL and default label is written once, in its venue description."""
    facts = set()
    for v in venues().values():
        facts |= {v.ws_url, v.rest_url} | {v.label(ch.name) for ch in v.channels}
    allowed = {ROOT / "obitui" / "feeds" / pkg for pkg in ("binance", "bitget")}
    hits = []
    for path in (ROOT / "obitui").rglob("*.py"):
        if any(a in path.parents for a in allowed):
            continue
        text = path.read_text(encoding="utf-8")
        for fact in facts:
            # a label in prose (a docstring naming the default fleet) is not a second definition;
            # a quoted one is
            if fact.startswith(("wss://", "https://")) and fact in text or re.search(rf"[\"']{re.escape(fact)}[\"']", text):
                hits.append(f"{path.relative_to(ROOT)}: {fact}")
    assert hits == []


def test_the_venue_modules_stay_light() -> None:
    """Config (and so the UI) reads the descriptions: they must not pull the network stack."""
    code = ("import sys, obitui.config; obitui.config.load_config(None); "
            "print(sorted(m for m in ('websockets', 'aiohttp', 'obitui.feeds.base') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_snapshot_depth_fits_a_cold_start_in_the_weight_budget() -> None:
    """Every book needs a snapshot at start: the REST depth is the deepest one whose weight for
    all books fits 80 % of a minute's budget (150 spot books: 500 levels, weight 25 each)."""
    spot, usdm = venue("binance"), venue("binance-usdm")
    assert [spot.fit_limit(1000, n, 6000) for n in (1, 40, 96, 150, 300)] == [1000, 1000, 1000, 500, 100]
    assert [usdm.fit_limit(1000, n, 2400) for n in (1, 40, 150, 300)] == [1000, 1000, 500, 100]
    assert spot.fit_limit(100, 150, 6000) == 100          # a shallower configured depth stays
    # never below 100 levels: a book is exact only within its snapshot's depth, and the top 20
    # must stay exact while the top of the book is eaten
    assert spot.fit_limit(1000, 2000, 3000) == 100 and usdm.fit_limit(1000, 2000, 100) == 100
    assert spot.fit_limit(20, 2000, 3000) == 20           # unless the config asks for less


def test_one_market_is_kept_by_one_book_feed(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text('[[feeds]]\nlabel = "A"\nvenue = "binance"\nchannel = "depth"\nsymbols = ["BTCUSDT", "ETHUSDT"]\n'
                 '[[feeds]]\nlabel = "B"\nvenue = "binance"\nchannel = "depth"\nsymbol = "ETHUSDT"\n')
    with pytest.raises(ConfigError, match="binance:ETHUSDT is kept by two book feeds"):
        load_config(p)


def test_symbols_on_a_split_fleet_are_split_again() -> None:
    """`--symbols` (and top:N) on a config whose feeds are split: the processes get shares,
    never the whole list each; more markets than one connection takes: more connections in
    the same process (feeds/group.py), not more processes."""
    from dataclasses import replace

    from obitui.config import feed_book_ids, split_processes, with_symbols
    from obitui.feeds.group import connection_shares
    many = [f"M{i}USDT" for i in range(120)]
    cfg = with_symbols(load_config(None), many)
    assert [f.label for f in cfg.feeds] == ["Bi-OB", "Bi-TR", "Bg-OB", "Bg-PR"]
    bg = next(f for f in cfg.feeds if f.label == "Bg-OB")
    assert [len(s) for s in connection_shares(bg)] == [50, 50, 20]
    assert [len(s) for s in connection_shares(cfg.feeds[0])] == [120]       # Binance: 200 a connection
    split = load_config(None)
    split.feeds = split_processes([replace(f, processes=3) if f.venue == "bitget" else f for f in split.feeds])
    cfg = with_symbols(split, many)
    assert [(f.label, len(f.symbols)) for f in cfg.feeds if f.venue == "bitget"] == [
        ("Bg-OB#1", 40), ("Bg-OB#2", 40), ("Bg-OB#3", 40), ("Bg-PR#1", 40), ("Bg-PR#2", 40), ("Bg-PR#3", 40)]
    again = with_symbols(cfg, ["BTCUSDT", "ETHUSDT"])
    ids = feed_book_ids(again.feeds)
    books = [j for f, js in zip(again.feeds, ids) if f.is_book for j in js]
    assert len(books) == len(set(books)) == 4                # every market kept by one book feed
