"""Typed configuration: built-in defaults (the four default feeds of docs/ARCHITECTURE.md) and
TOML files.

A config file overrides the defaults; a bad file is one clear error naming the key."""
from __future__ import annotations

import math

import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

BINANCE_WS = "wss://stream.binance.com:9443"
BINANCE_REST = "https://api.binance.com"
BITGET_WS = "wss://ws.bitget.com/v2/ws/public"
BITGET_REST = "https://api.bitget.com"

VENUE_CHANNELS = {"binance": ("depth", "trade"), "bitget": ("books", "ticker")}
STALE_DEFAULTS = {"depth": 60.0, "books": 60.0, "ticker": 60.0, "trade": 300.0}   # s, see stale_limit
WAIT_STRATEGIES = ("block", "spin")


class ConfigError(ValueError):
    """A config value that cannot be used; the message names the key."""


@dataclass(slots=True)
class FeedConfig:
    label: str
    venue: str                   # binance | bitget
    channel: str                 # binance: depth | trade; bitget: books | ticker
    symbol: str = "BTCUSDT"
    ws_url: str = ""
    rest_url: str = ""
    inst_type: str = "SPOT"      # bitget
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
    futures: bool = False        # binance USD-M depth rules (pu chaining)
    cpu: int | None = None       # pin the feed process to this CPU

    @property
    def qdigits(self) -> int:
        """The decimals of quantities in the fixed-point records and books."""
        return self.digits if self.qty_digits < 0 else self.qty_digits

    @property
    def is_book(self) -> bool:
        return self.channel in ("depth", "books")

    @property
    def stream_name(self) -> str:
        if self.venue == "binance":
            return f"{self.symbol.lower()}@{self.depth_stream if self.channel == 'depth' else 'trade'}"
        return f"{self.inst_type}:{self.channel}:{self.symbol}"

    @property
    def book_key(self) -> str:
        return f"{self.venue}:{self.symbol}"

    def stale_limit(self) -> float:
        """No data on the channel for this long: reconnect. A dead connection is found sooner
        by the pings (idle_ping + pong_timeout); this limit is for a channel that went quiet on
        a live connection, so it follows the venue's update rate: an illiquid book may send no
        diff for tens of seconds while its pongs flow, and a quiet market no trade for minutes."""
        if self.stale_after > 0:
            return self.stale_after
        return STALE_DEFAULTS[self.channel]

    def validate(self, where: str) -> None:
        if self.venue not in VENUE_CHANNELS:
            raise ConfigError(f"{where}.venue: unknown venue {self.venue!r} (known: binance, bitget)")
        if self.channel not in VENUE_CHANNELS[self.venue]:
            raise ConfigError(f"{where}.channel: {self.venue} feeds are "
                              f"{' or '.join(VENUE_CHANNELS[self.venue])}, not {self.channel!r}")
        if not self.label or len(self.label) > 15:
            raise ConfigError(f"{where}.label: 1-15 characters, got {self.label!r}")
        if not self.symbol.isalnum():
            raise ConfigError(f"{where}.symbol: letters and digits only, got {self.symbol!r}")
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


def default_feeds() -> list[FeedConfig]:
    return [
        FeedConfig("Bi-OB", "binance", "depth", "BTCUSDT", BINANCE_WS, BINANCE_REST),
        FeedConfig("Bi-TR", "binance", "trade", "BTCUSDT", BINANCE_WS, BINANCE_REST),
        FeedConfig("Bg-OB", "bitget", "books", "BTCUSDT", BITGET_WS, BITGET_REST),
        FeedConfig("Bg-PR", "bitget", "ticker", "BTCUSDT", BITGET_WS, BITGET_REST),
    ]


@dataclass(slots=True)
class Config:
    feeds: list[FeedConfig] = field(default_factory=default_feeds)
    obi_levels: int = 20
    engine_wait: str = "block"
    engine_cpu: int | None = None
    interval: float = 1.0
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
        if len(self.feeds) > 16:
            raise ConfigError("feeds: at most 16 feeds")
        if not 1 <= self.obi_levels <= 20:
            raise ConfigError(f"obi_levels: 1-20, got {self.obi_levels}")
        if self.engine_wait not in WAIT_STRATEGIES:
            raise ConfigError(f"engine.wait: one of {', '.join(WAIT_STRATEGIES)}, got {self.engine_wait!r}")
        if self.engine_cpu is not None and not 0 <= self.engine_cpu < 4096:
            raise ConfigError(f"engine.cpu: a CPU number >= 0, got {self.engine_cpu}")
        if not (math.isfinite(self.interval) and 0 < self.interval <= 3600):
            raise ConfigError(f"interval: (0, 3600] s, got {self.interval}")
        if not (math.isfinite(self.heartbeat_stale) and 1 <= self.heartbeat_stale <= 600):
            raise ConfigError(f"supervisor.heartbeat_stale: [1, 600] s, got {self.heartbeat_stale}")

    def with_sim(self, binance_ws: str, binance_rest: str, bitget_ws: str, bitget_rest: str = "") -> Config:
        """The same feeds pointed at the simulator."""
        feeds = [replace(f, ws_url=binance_ws if f.venue == "binance" else bitget_ws,
                         rest_url=binance_rest if f.venue == "binance" else bitget_rest) for f in self.feeds]
        return replace(self, feeds=feeds)


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
        else:
            raise ConfigError(f"engine.{key}: unknown key (known: wait, cpu)")
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
                kw[key] = _typed(f"{where}.{key}", value, _FEED_FIELDS[key].type)
            venue = kw["venue"]
            if "digits" in kw or "qty_digits" in kw:
                kw.setdefault("scales", "config")     # scales set by hand are meant
            kw.setdefault("ws_url", BINANCE_WS if venue == "binance" else BITGET_WS)
            kw.setdefault("rest_url", BINANCE_REST if venue == "binance" else BITGET_REST)
            feeds.append(FeedConfig(**kw))
        cfg.feeds = feeds
    cfg.validate()
    return cfg
