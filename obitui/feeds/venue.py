"""What obitui knows of an exchange, in one place per venue: a ``Venue`` description that
config, supervisor, replay, capture, simulator and UI read instead of repeating facts.

Each venue package (``feeds/binance/``, ``feeds/bitget/``) describes its APIs in its
``venue.py`` (``VENUES``); ``REGISTERED`` below lists those modules. Adding a venue is adding
a folder and one line here (docs/ADDING_A_VENUE.md).

These modules stay light: no network library is imported here, so the UI and the config
loader can read them at no cost."""
from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from obitui.capture import CaptureRecord
    from obitui.config import FeedConfig
    from obitui.feeds.symbols import Scales

# one line per venue package: its description module (a tuple VENUES of Venue)
REGISTERED = (
    "obitui.feeds.binance.venue",
    "obitui.feeds.bitget.venue",
)


@dataclass(frozen=True, slots=True)
class Channel:
    """One kind of stream a venue serves and the feed that reads it."""
    name: str              # the config word: depth, trade, books, ticker
    label: str             # the label suffix: OB, TR, PR
    produces: str          # the record kinds it pushes: "book", "trade" or "ticker"
    feed: str              # "module:Class" of its feed, imported by the feed process only
    stale_after: float     # s without data on a live connection: reconnect (see FeedConfig.stale_limit)
    ws_route: str = ""     # a path before the stream path (USD-M: /public for depth, /market for trades)

    @property
    def is_book(self) -> bool:
        return self.produces == "book"


@dataclass(frozen=True, slots=True)
class FeedSpec:
    """A feed a capture can drive: found by a venue's ``recognise``."""
    venue: str
    channel: str
    symbol: str
    options: tuple[tuple[str, Any], ...] = ()   # FeedConfig fields to set (e.g. inst_type)


@dataclass(frozen=True, kw_only=True)
class Venue:
    """The facts of one venue API. Subclasses (one per exchange) add the protocol's own."""
    name: str                      # config ``venue``: binance, binance-usdm, bitget, bitget-v3
    exchange: str                  # the exchange: capture files' ``venue``, the simulator server
    title: str                     # for people: "Binance USD-M futures"
    label_prefix: str              # labels are <prefix>-<channel label>: Bi-OB, Bf-TR, Bg-PR
    ws_url: str                    # default WebSocket base
    rest_url: str                  # default REST base
    channels: tuple[Channel, ...]
    default_per_connection: int = 50   # streams/channels a feed puts on one connection by default
    max_per_connection: int = 1000     # the venue's limit per connection
    sim_ws_path: str = ""          # the simulator's WebSocket base + this = ws_url in --sim
    sim_module: str = ""           # the simulator module that speaks this protocol
    defaults: Mapping[str, Any] = field(default_factory=dict)   # FeedConfig fields this venue sets
    # The hooks below are functions of the venue module (plain callables, so a description
    # stays a value): the stream's name, the symbols' scales, what a capture record holds.
    stream_name_of: Callable[[Venue, FeedConfig], str] | None = None
    scales_of: Callable[[Venue, str, list[str]], dict[str, Scales]] | None = None
    recognise_of: Callable[[Venue, CaptureRecord], Iterable[FeedSpec]] | None = None
    markets_of: Callable[[Venue, str], dict[str, tuple[str, float]]] | None = None

    # ------------------------------------------------------------ channels
    def channel(self, name: str) -> Channel:
        for ch in self.channels:
            if ch.name == name:
                return ch
        raise KeyError(name)

    @property
    def channel_names(self) -> tuple[str, ...]:
        return tuple(ch.name for ch in self.channels)

    def label(self, channel: str) -> str:
        return f"{self.label_prefix}-{self.channel(channel).label}"

    # ------------------------------------------------------------ hooks
    def stream_name(self, cfg: FeedConfig) -> str:
        assert self.stream_name_of is not None, self.name
        return self.stream_name_of(self, cfg)

    def scales(self, rest_url: str, symbols: list[str]) -> dict[str, Scales]:
        """Per-symbol decimals from the venue's symbol info (SymbolInfoError if unavailable)."""
        if self.scales_of is None:
            from obitui.feeds.symbols import SymbolInfoError
            raise SymbolInfoError(f"no symbol info for venue {self.name}")
        return self.scales_of(self, rest_url, symbols)

    def markets(self, rest_url: str) -> dict[str, tuple[str, float]]:
        """Every symbol the venue lists as trading: symbol -> (quote asset, 24 h volume in
        that quote asset), for ``--symbols top:N``; SymbolInfoError when the venue does not
        answer."""
        if self.markets_of is None:
            from obitui.feeds.symbols import SymbolInfoError
            raise SymbolInfoError(f"no market list for venue {self.name}")
        return self.markets_of(self, rest_url)

    def recognise(self, rec: CaptureRecord) -> Iterable[FeedSpec]:
        """The feeds of this venue a capture record shows (none when it is another API's)."""
        if self.recognise_of is None or rec.venue != self.exchange:
            return ()
        return self.recognise_of(self, rec)

    def sim_urls(self, ws_base: str, rest_base: str) -> tuple[str, str]:
        """(ws_url, rest_url) of this API on a simulator listening at the exchange's bases."""
        return ws_base.rstrip("/") + self.sim_ws_path, rest_base


# ---------------------------------------------------------------- the registry
@cache
def venues() -> Mapping[str, Venue]:
    out: dict[str, Venue] = {}
    for module in REGISTERED:
        for v in importlib.import_module(module).VENUES:
            if v.name in out:
                raise RuntimeError(f"venue {v.name!r} registered twice ({module})")
            out[v.name] = v
    return out


def venue(name: str) -> Venue:
    try:
        return venues()[name]
    except KeyError:
        raise KeyError(f"unknown venue {name!r} (known: {', '.join(venues())})") from None


def venue_pool(name: str) -> int:
    """The venue's REST weight pool: its place in the registry (the same in every process)."""
    return list(venues()).index(name)


def exchanges() -> tuple[str, ...]:
    """The exchanges, in registration order (capture files name these)."""
    seen: list[str] = []
    for v in venues().values():
        if v.exchange not in seen:
            seen.append(v.exchange)
    return tuple(seen)


def exchange_of_url(url: str) -> str | None:
    """The exchange a URL belongs to (by its host), or None."""
    host = (urlsplit(url).hostname or "").lower()
    for v in venues().values():
        for base in (v.ws_url, v.rest_url):
            h = (urlsplit(base).hostname or "").lower()
            # api.binance.com and fstream.binance.com are one exchange: compare the domain
            if host and h and host.split(".")[-2:] == h.split(".")[-2:]:
                return v.exchange
    return None


def load_feed_class(venue_name: str, channel: str) -> type:
    module, _, cls = venue(venue_name).channel(channel).feed.partition(":")
    return getattr(importlib.import_module(module), cls)
