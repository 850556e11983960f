"""Binance, as obitui knows it: spot and USD-M futures (docs/PROTOCOLS.md, Binance).

Both APIs speak the same frame shapes (combined streams ``/stream?streams=a/b``, a REST depth
snapshot, ``depthUpdate`` and trade events); they differ in hosts, routes, REST paths, limits,
weights and the depth continuity rule (spot: ``U <= book + 1``; USD-M: ``pu == previous u``)."""
from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from obitui.feeds.venue import Channel, FeedSpec, Venue

if TYPE_CHECKING:
    from obitui.capture import CaptureRecord
    from obitui.config import FeedConfig
    from obitui.feeds.symbols import Scales


MIN_BOOK_DEPTH = 100     # snapshot levels a book needs: its top 20 stays exact while the top is eaten


def spot_depth_weight(limit: int) -> int:
    """GET /api/v3/depth: 5 up to 100 levels, 25 to 500, 50 to 1000, 250 above (to 5000)."""
    return 5 if limit <= 100 else 25 if limit <= 500 else 50 if limit <= 1000 else 250


def usdm_depth_weight(limit: int) -> int:
    """GET /fapi/v1/depth: 2 up to 50 levels, 5 for 100, 10 for 500, 20 for 1000."""
    return 2 if limit <= 50 else 5 if limit <= 100 else 10 if limit <= 500 else 20


@dataclass(frozen=True, kw_only=True)
class BinanceVenue(Venue):
    futures: bool                  # USD-M rules: pu chaining, first event U <= lastUpdateId <= u
    depth_path: str                # REST depth snapshot
    info_path: str                 # REST exchangeInfo
    snapshot_limits: tuple[int, ...]   # the REST depth limits the venue accepts
    depth_weight: Callable[[int], int]
    weight_limit: int              # REST weight per minute and IP

    def fit_limit(self, limit: int, books: int, budget: float, share: float = 0.8,
                  floor: int = MIN_BOOK_DEPTH) -> int:
        """The snapshot ``limit`` to ask for when ``books`` books may all need a snapshot within
        ``budget`` weight: ``limit`` when they fit in ``share`` of it, else the deepest limit
        the venue takes that does, never below ``floor`` levels (a book is exact only within
        its snapshot's depth: levels deeper than it come into view unseen)."""
        if books * self.depth_weight(limit) <= share * budget:
            return limit
        steps = self.snapshot_limits if self.futures else (5, 10, 20, 50, 100, 500, 1000, 5000)
        floor = min(floor, limit)
        fitting = [x for x in steps if floor <= x <= limit and books * self.depth_weight(x) <= share * budget]
        return max(fitting) if fitting else min(x for x in steps if x >= floor)

    def check_limit(self, limit: int) -> str:
        """'' when ``limit`` is one the REST depth accepts, else what is wrong."""
        if self.futures:
            if limit not in self.snapshot_limits:
                return f"USD-M depth takes limit {', '.join(map(str, self.snapshot_limits))}, not {limit}"
        elif not 1 <= limit <= self.snapshot_limits[-1]:
            return f"spot depth takes limit 1-{self.snapshot_limits[-1]}, not {limit}"
        return ""


def _stream_name(v: Venue, cfg: FeedConfig) -> str:
    sym = cfg.symbol.lower()
    if cfg.channel == "depth":
        return f"{sym}@{cfg.depth_stream}"
    # spot trades come one per fill (@trade); USD-M has aggregated trades only
    return f"{sym}@{'aggTrade' if v.futures else 'trade'}"      # type: ignore[attr-defined]


def _scales(v: Venue, rest_url: str, symbols: list[str]) -> dict[str, Scales]:
    from obitui.feeds.symbols import Scales, SymbolInfoError, get_json, step_decimals
    assert isinstance(v, BinanceVenue)
    if v.futures:       # USD-M takes no symbol filter: the whole list
        body = get_json(f"{rest_url.rstrip('/')}{v.info_path}")
    else:
        q = urllib.parse.quote(json.dumps(sorted(symbols), separators=(",", ":")))
        body = get_json(f"{rest_url.rstrip('/')}{v.info_path}?symbols={q}")
    out: dict[str, Scales] = {}
    try:
        for s in body["symbols"]:
            if s["symbol"] not in symbols:
                continue
            filters = {f["filterType"]: f for f in s["filters"]}
            out[s["symbol"]] = Scales(step_decimals(filters["PRICE_FILTER"]["tickSize"]),
                                      step_decimals(filters["LOT_SIZE"]["stepSize"]))
    except (KeyError, TypeError) as exc:
        raise SymbolInfoError(f"exchangeInfo without the filters of a symbol ({exc!r})") from None
    return out


def _markets(v: Venue, rest_url: str) -> dict[str, tuple[str, float]]:
    """Every TRADING symbol -> (quote asset, 24 h quote volume): exchangeInfo without a filter
    (spot weight 20, USD-M 1) and ticker/24hr of every symbol (spot weight 80, USD-M 40)."""
    from obitui.feeds.symbols import SymbolInfoError, get_json
    assert isinstance(v, BinanceVenue)
    base = rest_url.rstrip("/")
    info = get_json(f"{base}{v.info_path}")
    tickers = get_json(f"{base}{v.info_path.rsplit('/', 1)[0]}/ticker/24hr")
    try:
        volumes = {t["symbol"]: float(t["quoteVolume"]) for t in tickers}
        return {s["symbol"]: (s["quoteAsset"], volumes.get(s["symbol"], 0.0))
                for s in info["symbols"] if s["status"] == "TRADING"}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise SymbolInfoError(f"exchangeInfo or ticker/24hr without a symbol's figures ({exc!r})") from None


def is_usdm_url(url: str) -> bool:
    """A USD-M URL: the futures hosts (fstream, fapi), the /public and /market routes, or
    the /fapi REST paths."""
    u = urlsplit(url)
    host = (u.hostname or "").lower()
    return host.startswith(("fstream", "fapi")) or u.path.startswith(("/public/", "/market/", "/fapi/"))


def _recognise(v: Venue, rec: CaptureRecord) -> Iterable[FeedSpec]:
    """Depth and trade streams named in a capture's WebSocket URLs. A capture is USD-M when its
    URL says so (host or route) or its depth events carry ``pu``."""
    if rec.kind != "ws":
        return ()
    usdm = is_usdm_url(rec.url) or '"pu":' in rec.data
    if usdm != v.futures:      # type: ignore[attr-defined]
        return ()
    u = urlsplit(rec.url)
    streams = parse_qs(u.query).get("streams", [""])[0].split("/") if u.query else [u.path.rsplit("/", 1)[-1]]
    out = []
    for s in streams:
        sym, _, kind = s.partition("@")
        channel = "depth" if kind.startswith("depth") else "trade" if kind in ("trade", "aggTrade") else ""
        if channel and sym:
            out.append(FeedSpec(v.name, channel, sym.upper()))
    return out


SPOT = BinanceVenue(
    name="binance", exchange="binance", title="Binance spot", label_prefix="Bi",
    ws_url="wss://stream.binance.com:9443", rest_url="https://api.binance.com",
    channels=(Channel("depth", "OB", "book", "obitui.feeds.binance.feed:BinanceDepthFeed", 60.0),
              Channel("trade", "TR", "trade", "obitui.feeds.binance.feed:BinanceTradeFeed", 300.0)),
    sim_module="obitui.sim.binance",
    futures=False, depth_path="/api/v3/depth", info_path="/api/v3/exchangeInfo",
    snapshot_limits=(5000,), depth_weight=spot_depth_weight, weight_limit=6000,
    default_per_connection=200, max_per_connection=1024,
    stream_name_of=_stream_name, scales_of=_scales, recognise_of=_recognise,
    markets_of=_markets,
)

USDM = BinanceVenue(
    name="binance-usdm", exchange="binance", title="Binance USD-M futures", label_prefix="Bf",
    ws_url="wss://fstream.binance.com", rest_url="https://fapi.binance.com",
    # since 2026-04-23 depth streams are served under /public and trades under /market; a
    # stream on the other route connects and stays silent
    channels=(Channel("depth", "OB", "book", "obitui.feeds.binance.feed:BinanceDepthFeed", 60.0,
                      ws_route="/public"),
              Channel("trade", "TR", "trade", "obitui.feeds.binance.feed:BinanceTradeFeed", 300.0,
                      ws_route="/market")),
    sim_module="obitui.sim.binance",
    futures=True, depth_path="/fapi/v1/depth", info_path="/fapi/v1/exchangeInfo",
    snapshot_limits=(5, 10, 20, 50, 100, 500, 1000), depth_weight=usdm_depth_weight, weight_limit=2400,
    default_per_connection=200, max_per_connection=1024,
    stream_name_of=_stream_name, scales_of=_scales, recognise_of=_recognise,
    markets_of=_markets,
)

VENUES = (SPOT, USDM)
