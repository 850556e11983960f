"""Typed configuration: built-in defaults (the four default feeds of docs/ARCHITECTURE.md) and
TOML files.

A config file overrides the defaults; a bad file is one clear error naming the key. Venue
facts (URLs, channels, labels, stale limits) come from the venue descriptions
(``obitui.feeds.venue``), never from here."""
from __future__ import annotations

import math

import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from obitui.feeds.venue import Channel, Venue, venue as venue_named, venues

WAIT_STRATEGIES = ("block", "spin", "batch")
# the engine's wait (docs/ARCHITECTURE.md, engine wake-up): per strategy, how long it keeps
# polling after the last record before it sleeps on the futex (spin_us), and how long it
# pauses after a poll that found records (nap_us); `[engine] spin_us / nap_us` override them
WAIT_DEFAULTS = {"block": (0, 0), "batch": (0, 200), "spin": (0, 0)}
MAX_WAIT_US = 100_000


class ConfigError(ValueError):
    """A config value that cannot be used; the message names the key."""


@dataclass(slots=True)
class FeedConfig:
    label: str
    venue: str                   # a registered venue: binance, binance-usdm, bitget, bitget-v3
    channel: str                 # one of the venue's channels (binance: depth | trade; bitget: books | ticker)
    symbol: str = ""             # one market ("": the first of ``symbols``, else BTCUSDT)
    symbols: tuple[str, ...] = ()   # several markets on one feed process (empty: just ``symbol``)
    per_connection: int = 0      # streams (Binance) / channels (Bitget) per connection (0: the venue's default)
    processes: int = 1           # split the symbols over this many processes (labels <label>#1, #2, ...)
    rest_share: int = 1          # processes sharing the venue's REST weight limit (set at load)
    ws_url: str = ""             # "": the venue's
    rest_url: str = ""           # "": the venue's
    inst_type: str = ""          # bitget instType ("": the venue's, SPOT on v2, spot on v3)
    depth_stream: str = "depth@100ms"   # binance depth stream suffix
    snapshot_limit: int = 1000   # binance REST depth limit
    ring_capacity: int = 4 << 20
    stale_after: float = 0.0     # no data for this long: reconnect (0: per-channel default)
    max_frame: int = 8 << 20     # largest websocket frame accepted
    ping_interval: float = 25.0  # keep-alive ping (Bitget: text "ping"; Binance: a WebSocket ping)
    idle_ping: float = 5.0       # ping as soon as nothing arrived this long (0: only every ping_interval)
    pong_timeout: float = 5.0    # no pong this long after a ping: the connection is dead, reconnect
    rotate_after: float = 23.5 * 3600   # open a new socket and hand over before the venue's 24 h cut (0: off)
    digits: int = 8              # fixed-point decimals of prices
    qty_digits: int = -1         # fixed-point decimals of quantities (-1: as digits)
    scales: str = "venue"        # "venue": both from the symbol's tick/step sizes at start; "config": as set here
    market_scales: tuple[tuple[str, int, int], ...] = ()   # (symbol, digits, qty digits) found at start
    futures: bool = False        # old spelling of venue = "binance-usdm" (with venue = "binance")
    cpu: int | None = None       # pin the feed process to this CPU

    def __post_init__(self) -> None:
        """Fill what was left to the venue (URLs, instType); ``futures = true`` on Binance
        means the USD-M API."""
        if self.futures and self.venue == "binance":
            self.venue = "binance-usdm"
        wanted = tuple(dict.fromkeys(str(sym).upper() for sym in self.symbols))
        if wanted and (not self.symbol or self.symbol.upper() in wanted):
            self.symbols = wanted
            self.symbol = wanted[0]
        else:
            # one market, or ``symbol`` set apart from ``symbols`` (replace(f, symbol=...)): it wins
            self.symbol = self.symbol or "BTCUSDT"
            self.symbols = (self.symbol,)
        v = venues().get(self.venue)
        if v is None:
            return           # validate() names the unknown venue
        self.futures = bool(getattr(v, "futures", False))
        if not self.ws_url:
            self.ws_url = v.ws_url
        if not self.rest_url:
            self.rest_url = v.rest_url
        if not self.inst_type:
            self.inst_type = str(v.defaults.get("inst_type", ""))

    @property
    def venue_info(self) -> Venue:
        return venue_named(self.venue)

    @property
    def channel_info(self) -> Channel:
        return self.venue_info.channel(self.channel)

    @property
    def qdigits(self) -> int:
        """The decimals of quantities in the fixed-point records and books."""
        return self.digits if self.qty_digits < 0 else self.qty_digits

    def scales_of(self, symbol: str) -> tuple[int, int]:
        """(price digits, quantity digits) of one of the feed's markets: the venue's for that
        symbol when they were found at start, else the feed's."""
        for sym, d, q in self.market_scales:
            if sym == symbol:
                return d, q
        return self.digits, self.qdigits

    @property
    def is_book(self) -> bool:
        return self.channel_info.is_book

    @property
    def stream_name(self) -> str:
        return self.venue_info.stream_name(self)

    @property
    def book_key(self) -> str:
        """The key of the feed's first market (``venue:SYMBOL``)."""
        return f"{self.venue}:{self.symbol}"

    @property
    def book_keys(self) -> list[str]:
        """The keys of all its markets, in the order of ``symbols``."""
        return [f"{self.venue}:{sym}" for sym in self.symbols]

    @property
    def connection_size(self) -> int:
        """Streams or channels per connection: as configured, else the venue's default."""
        return self.per_connection or self.venue_info.default_per_connection

    def stale_limit(self) -> float:
        """No data on the channel for this long: reconnect. A dead connection is found sooner
        by the pings (idle_ping + pong_timeout); this limit is for a channel that went quiet on
        a live connection, so it follows the venue's update rate: an illiquid book may send no
        diff for tens of seconds while its pongs flow, and a quiet market no trade for minutes."""
        if self.stale_after > 0:
            return self.stale_after
        return self.channel_info.stale_after

    def validate(self, where: str) -> None:
        known = venues()
        if self.venue not in known:
            raise ConfigError(f"{where}.venue: unknown venue {self.venue!r} (known: {', '.join(known)})")
        v = known[self.venue]
        if self.channel not in v.channel_names:
            raise ConfigError(f"{where}.channel: {self.venue} feeds are "
                              f"{' or '.join(v.channel_names)}, not {self.channel!r}")
        check_limit = getattr(v, "check_limit", None)
        if check_limit is not None and (why := check_limit(self.snapshot_limit)):
            raise ConfigError(f"{where}.snapshot_limit: {why}")
        inst_types = getattr(v, "inst_types", None)
        if inst_types is not None and not (self.inst_type.replace("-", "").isalnum()
                                           and (self.inst_type.islower() == inst_types[0].islower())):
            # a wrong instType is acked and then silent on the real venue: say it here
            raise ConfigError(f"{where}.inst_type: {self.venue} takes {', '.join(inst_types)}, "
                              f"not {self.inst_type!r}")
        if not self.label or len(self.label) > 15:
            raise ConfigError(f"{where}.label: 1-15 characters, got {self.label!r}")
        for sym in self.symbols:
            if not sym.isalnum() or not sym.isascii():
                raise ConfigError(f"{where}.symbols: letters and digits only, got {sym!r}")
        if len(self.symbols) > MAX_BOOKS:
            raise ConfigError(f"{where}.symbols: at most {MAX_BOOKS}, got {len(self.symbols)}")
        if not 0 <= self.per_connection <= v.max_per_connection:
            raise ConfigError(f"{where}.per_connection: 1-{v.max_per_connection} (the venue's limit per "
                              f"connection) or 0 for the default {v.default_per_connection}, "
                              f"got {self.per_connection}")
        if not 1 <= self.processes <= 16:
            raise ConfigError(f"{where}.processes: 1-16, got {self.processes}")
        per_process = -(-len(self.symbols) // self.processes)
        if -(-per_process // self.connection_size) > MAX_CONNECTIONS:
            raise ConfigError(f"{where}.symbols: {per_process} markets in one process need more than "
                              f"{MAX_CONNECTIONS} connections of {self.connection_size}: set processes "
                              f"(now {self.processes}) or per_connection")
        cap = self.ring_capacity
        if cap < 65536 or cap & (cap - 1):
            raise ConfigError(f"{where}.ring_capacity: a power of two >= 65536, got {cap}")
        if not 1 <= self.snapshot_limit <= 5000:
            raise ConfigError(f"{where}.snapshot_limit: 1-5000, got {self.snapshot_limit}")
        if not 0 <= self.digits <= 18:
            raise ConfigError(f"{where}.digits: 0-18, got {self.digits}")
        if not -1 <= self.qty_digits <= 18:
            raise ConfigError(f"{where}.qty_digits: 0-18 (or -1: as digits), got {self.qty_digits}")
        if self.scales not in ("venue", "config"):
            raise ConfigError(f"{where}.scales: \"venue\" or \"config\", got {self.scales!r}")
        if cap > 1 << 34:
            raise ConfigError(f"{where}.ring_capacity: at most 2**34 (16 GiB), got {cap}")
        if not (math.isfinite(self.stale_after) and 0 <= self.stale_after <= 86400):
            raise ConfigError(f"{where}.stale_after: 0 (the channel's default) to 86400 s, got {self.stale_after}")
        if not 4096 <= self.max_frame <= 1 << 30:
            raise ConfigError(f"{where}.max_frame: 4096 to 2**30 bytes, got {self.max_frame}")
        if not (math.isfinite(self.ping_interval) and 0 < self.ping_interval <= 30):
            raise ConfigError(f"{where}.ping_interval: (0, 30] s (Bitget drops clients silent for "
                              f"2 minutes and asks for a ping at least every 30 s), got {self.ping_interval}")
        if not (math.isfinite(self.idle_ping) and (self.idle_ping == 0 or 0.5 <= self.idle_ping <= self.ping_interval)):
            raise ConfigError(f"{where}.idle_ping: 0 (off) or 0.5 s to ping_interval, got {self.idle_ping}")
        if not (math.isfinite(self.pong_timeout) and 0 < self.pong_timeout <= 60):
            raise ConfigError(f"{where}.pong_timeout: (0, 60] s, got {self.pong_timeout}")
        if not (math.isfinite(self.rotate_after) and (self.rotate_after == 0 or 1 <= self.rotate_after <= 86000)):
            raise ConfigError(f"{where}.rotate_after: 0 (off) or 1-86000 s (before the 24 h cut), "
                              f"got {self.rotate_after}")
        if self.cpu is not None and not 0 <= self.cpu < 4096:
            raise ConfigError(f"{where}.cpu: a CPU number >= 0, got {self.cpu}")


DEFAULT_VENUES = ("binance", "bitget")     # the default fleet: every channel of these, BTCUSDT


def default_feeds(symbol: str = "BTCUSDT") -> list[FeedConfig]:
    """Bi-OB, Bi-TR, Bg-OB, Bg-PR (**contract**): each channel of the default venues."""
    return [FeedConfig(v.label(ch.name), v.name, ch.name, symbol)
            for v in map(venue_named, DEFAULT_VENUES) for ch in v.channels]


MAX_BOOKS = 2048          # markets (book slots) in one fleet
MAX_CONNECTIONS = 32      # connections in one feed process (more: set processes)


def book_plan(feeds: list[FeedConfig]) -> list[str]:
    """The market keys (venue:SYMBOL) the engine keeps, in slot order: every market of every
    feed, once (a trade or ticker feed's market shares the slot of its book). A record names
    its market by the index in this list."""
    keys: dict[str, None] = {}
    for f in feeds:
        for key in f.book_keys:
            keys.setdefault(key, None)
    return list(keys)


def feed_book_ids(feeds: list[FeedConfig]) -> list[list[int]]:
    """Per feed, the book index (slot, record id) of each of its markets, in ``symbols`` order."""
    index = {key: i for i, key in enumerate(book_plan(feeds))}
    return [[index[key] for key in f.book_keys] for f in feeds]


def split_processes(feeds: list[FeedConfig]) -> list[FeedConfig]:
    """Each feed with ``processes = N`` > 1 as N feeds of about equal share of its symbols,
    labelled ``<label>#1`` .. ``#N`` (a share is never empty)."""
    out: list[FeedConfig] = []
    for f in feeds:
        n = min(f.processes, len(f.symbols))
        if n <= 1:
            out.append(f)     # ``processes`` kept: ``--symbols`` later splits as configured
            continue
        for k in range(n):
            share = f.symbols[k::n]
            out.append(replace(f, label=f"{f.label}#{k + 1}", symbol=share[0], symbols=share, processes=1))
    # the REST weight limit is per IP: every book process of a venue gets an equal share
    users: dict[str, int] = {}
    for f in out:
        if f.is_book:
            users[f.venue] = users.get(f.venue, 0) + 1
    return [replace(f, rest_share=users.get(f.venue, 1)) if f.is_book else f for f in out]


def engine_spin_us(cfg: Config) -> int:
    """How long the engine keeps polling after its last record before it sleeps (block)."""
    return cfg.engine_spin if cfg.engine_spin is not None else WAIT_DEFAULTS[cfg.engine_wait][0]


def engine_nap_us(cfg: Config) -> int:
    """How long the engine pauses after a poll that found records."""
    return cfg.engine_nap if cfg.engine_nap is not None else WAIT_DEFAULTS[cfg.engine_wait][1]


@dataclass(slots=True)
class Config:
    feeds: list[FeedConfig] = field(default_factory=default_feeds)
    obi_levels: int = 20
    engine_wait: str = "block"
    engine_cpu: int | None = None
    engine_spin: int | None = None   # us; None: the strategy's (WAIT_DEFAULTS)
    engine_nap: int | None = None    # us; None: the strategy's
    interval: float = 1.0            # headless: s between status lines / JSON objects; the default of --interval (the flag wins)
    heartbeat_stale: float = 10.0    # supervisor: a child silent this long is hung: killed, restarted

    def validate(self) -> None:
        labels = set()
        for i, f in enumerate(self.feeds):
            f.validate(f"feeds[{i}]")
            if f.label in labels:
                raise ConfigError(f"feeds[{i}].label: duplicate label {f.label!r}")
            labels.add(f.label)
        if not self.feeds:
            raise ConfigError("feeds: at least one feed is needed")
        if len(split_processes(self.feeds)) > 16:
            raise ConfigError("feeds: at most 16 feed processes (feeds times their processes)")
        served: dict[str, str] = {}
        for f in self.feeds:
            for key in (f.book_keys if f.is_book else ()):
                if key in served:
                    raise ConfigError(f"feeds: {key} is kept by two book feeds ({served[key]} and {f.label})")
                served[key] = f.label
        if len(book_plan(self.feeds)) > MAX_BOOKS:
            raise ConfigError(f"feeds: at most {MAX_BOOKS} markets in all, got {len(book_plan(self.feeds))}")
        if not 1 <= self.obi_levels <= 20:
            raise ConfigError(f"obi_levels: 1-20, got {self.obi_levels}")
        if self.engine_wait not in WAIT_STRATEGIES:
            raise ConfigError(f"engine.wait: one of {', '.join(WAIT_STRATEGIES)}, got {self.engine_wait!r}")
        for name, us in (("spin_us", self.engine_spin), ("nap_us", self.engine_nap)):
            if us is not None and not 0 <= us <= MAX_WAIT_US:
                raise ConfigError(f"engine.{name}: 0-{MAX_WAIT_US} us, got {us}")
        if self.engine_cpu is not None and not 0 <= self.engine_cpu < 4096:
            raise ConfigError(f"engine.cpu: a CPU number >= 0, got {self.engine_cpu}")
        if not (math.isfinite(self.interval) and 0 < self.interval <= 3600):
            raise ConfigError(f"interval: (0, 3600] s, got {self.interval}")
        if not (math.isfinite(self.heartbeat_stale) and 1 <= self.heartbeat_stale <= 600):
            raise ConfigError(f"supervisor.heartbeat_stale: [1, 600] s, got {self.heartbeat_stale}")

    def with_sim(self, binance_ws: str, binance_rest: str, bitget_ws: str, bitget_rest: str = "") -> Config:
        """The same feeds pointed at the simulator, from the URLs of its banner."""
        return self.with_sim_bases(sim_bases({"binance": (binance_ws, binance_rest),
                                              "bitget": (bitget_ws, bitget_rest)}))

    def with_sim_bases(self, bases: dict[str, tuple[str, str]]) -> Config:
        """The same feeds pointed at a simulator serving each exchange at (ws base, rest base)."""
        feeds = []
        for f in self.feeds:
            ws, rest = f.venue_info.sim_urls(*bases[f.venue_info.exchange])
            feeds.append(replace(f, ws_url=ws, rest_url=rest))
        return replace(self, feeds=feeds)


def sim_bases(banner: dict[str, tuple[str, str]]) -> dict[str, tuple[str, str]]:
    """The simulator's banner URLs (``binance ws=<base> rest=<base>``, ``bitget ws=<base + the
    v2 path>``) as each exchange's (ws base, rest base); a REST base the banner left out is
    the WebSocket host's."""
    out = {}
    for exchange, (ws, rest) in banner.items():
        scheme, _, rest_of = ws.partition("://")
        base = f"{scheme}://{rest_of.split('/', 1)[0]}"
        out[exchange] = (base, rest or base.replace("ws", "http", 1))
    return out


_FEED_FIELDS = {f.name: f for f in fields(FeedConfig)}


def _typed(where: str, value: Any, want: Any) -> Any:
    kinds = {"str": str, "int": int, "float": (int, float), "bool": bool, "int | None": int}
    ok = kinds.get(str(want), object)
    if isinstance(value, bool) and ok is not bool:
        raise ConfigError(f"{where}: expected {want}, got a boolean")
    if not isinstance(value, ok):
        raise ConfigError(f"{where}: expected {want}, got {type(value).__name__} {value!r}")
    return float(value) if str(want) == "float" else value


def load_config(path: str | Path | None) -> Config:
    """Defaults, overridden by the TOML file at ``path`` when given."""
    cfg = Config()
    if path is None:
        cfg.validate()
        return cfg
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {p} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read: {exc}") from None
    known = {"feeds", "obi_levels", "engine", "interval", "supervisor"}
    for key in data:
        if key not in known:
            raise ConfigError(f"{key}: unknown key (known: {', '.join(sorted(known))})")
    if "obi_levels" in data:
        cfg.obi_levels = _typed("obi_levels", data["obi_levels"], "int")
    if "interval" in data:
        cfg.interval = _typed("interval", data["interval"], "float")
    engine = data.get("engine", {})
    if not isinstance(engine, dict):
        raise ConfigError("engine: expected a table")
    for key, value in engine.items():
        if key == "wait":
            cfg.engine_wait = _typed("engine.wait", value, "str")
        elif key == "cpu":
            cfg.engine_cpu = _typed("engine.cpu", value, "int")
        elif key == "spin_us":
            cfg.engine_spin = _typed("engine.spin_us", value, "int")
        elif key == "nap_us":
            cfg.engine_nap = _typed("engine.nap_us", value, "int")
        else:
            raise ConfigError(f"engine.{key}: unknown key (known: wait, cpu, spin_us, nap_us)")
    sup = data.get("supervisor", {})
    if not isinstance(sup, dict):
        raise ConfigError("supervisor: expected a table")
    for key, value in sup.items():
        if key == "heartbeat_stale":
            cfg.heartbeat_stale = _typed("supervisor.heartbeat_stale", value, "float")
        else:
            raise ConfigError(f"supervisor.{key}: unknown key (known: heartbeat_stale)")
    if "feeds" in data:
        raw = data["feeds"]
        if not isinstance(raw, list):
            raise ConfigError("feeds: expected an array of tables ([[feeds]])")
        feeds = []
        for i, entry in enumerate(raw):
            where = f"feeds[{i}]"
            if not isinstance(entry, dict):
                raise ConfigError(f"{where}: expected a table")
            for req in ("label", "venue", "channel"):
                if req not in entry:
                    raise ConfigError(f"{where}.{req}: required")
            kw: dict[str, Any] = {}
            for key, value in entry.items():
                if key not in _FEED_FIELDS:
                    raise ConfigError(f"{where}.{key}: unknown key")
                if key == "symbols":
                    if not isinstance(value, list) or not value or not all(isinstance(x, str) for x in value):
                        raise ConfigError(f"{where}.symbols: a non-empty list of strings")
                    kw[key] = tuple(value)
                    continue
                kw[key] = _typed(f"{where}.{key}", value, _FEED_FIELDS[key].type)
            if "digits" in kw or "qty_digits" in kw:
                kw.setdefault("scales", "config")     # scales set by hand are meant
            feeds.append(FeedConfig(**kw))
        cfg.feeds = feeds
    cfg.validate()
    cfg.feeds = split_processes(cfg.feeds)
    return cfg


def join_processes(feeds: list[FeedConfig]) -> list[FeedConfig]:
    """The feeds as configured, before ``split_processes``: ``X#1`` .. ``X#N`` become ``X`` with
    their symbols and ``processes = N``."""
    out: list[FeedConfig] = []
    groups: dict[str, int] = {}
    for f in feeds:
        base, sep, n = f.label.rpartition("#")
        if not sep or not n.isdigit():
            out.append(f)
            continue
        if base not in groups:
            groups[base] = len(out)
            out.append(replace(f, label=base, processes=0, symbol="", symbols=()))
        j = groups[base]
        joined = out[j].symbols if out[j].processes else ()
        out[j] = replace(out[j], symbol="", symbols=joined + f.symbols, processes=out[j].processes + 1)
    return out


def with_symbols(cfg: Config, symbols: list[str]) -> Config:
    """``--symbols A,B,...``: every feed watches these markets, each process over as many
    connections as they need (``connection_size`` markets each), in as many processes as
    configured."""
    feeds = [replace(f, symbol="", symbols=tuple(symbols)) for f in join_processes(cfg.feeds)]
    out = replace(cfg, feeds=feeds)
    out.validate()
    out.feeds = split_processes(out.feeds)
    return out
