"""Fault knobs of the simulator: `--sim-fault NAME[=VALUE]`, settable at run time too."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True, slots=True)
class FaultSpec:
    name: str
    kind: type            # float probability, int count/seconds, bool switch
    default: Any          # value when given without '='
    syntax: str
    help: str


FAULTS: dict[str, FaultSpec] = {f.name: f for f in [
    FaultSpec("gap", float, 0.05, "gap[=P]", "drop each book diff with probability P"),
    FaultSpec("reorder", float, 0.05, "reorder[=P]", "send a book diff after the next one, with probability P"),
    FaultSpec("duplicate", float, 0.05, "duplicate[=P]", "send a book diff twice, with probability P"),
    FaultSpec("bad_checksum", float, 0.05, "bad_checksum[=P]",
              "Bitget: a wrong checksum on a books frame with probability P (turns checksums on)"),
    FaultSpec("stale_snapshot", int, 1, "stale_snapshot[=N]",
              "Binance: the next N REST snapshots are older than the stream"),
    FaultSpec("http_429", int, 1, "http_429[=N]", "Binance: the next N REST requests get 429 + Retry-After"),
    FaultSpec("http_418", int, 1, "http_418[=N]", "Binance: the next N REST requests get 418 (banned) + Retry-After"),
    FaultSpec("lost_snapshot", int, 1, "lost_snapshot[=N]",
              "Bitget: the snapshot after the next N books subscribes is never sent (updates are)"),
    FaultSpec("rest_down", int, 1, "rest_down[=N]", "Binance: the next N REST requests get 503 (a REST outage)"),
    FaultSpec("disconnect", float, 10.0, "disconnect[=S]", "close every connection S seconds after it opened"),
    FaultSpec("silence", float, 5.0, "silence[=S]",
              "every connection stops sending data S seconds after it opened (socket kept, pings answered)"),
    FaultSpec("malformed", float, 0.02, "malformed[=P]", "replace a data frame by invalid JSON or wrong types, probability P"),
    FaultSpec("oversize", float, 0.01, "oversize[=P]", "replace a data frame by a 2 MiB frame, probability P"),
    FaultSpec("no_pong", bool, True, "no_pong", "never answer the client's pings (ws ping frames, Bitget text ping)"),
    FaultSpec("no_ping_check", bool, True, "no_ping_check",
              "do not disconnect clients that stop answering pings (Binance) or sending them (Bitget)"),
    FaultSpec("burst", float, 20_000.0, "burst=RATE", "raise the market's step rate to RATE steps/s per symbol"),
    FaultSpec("server_shutdown", float, 3.0, "server_shutdown[=S]",
              "Binance: send serverShutdown to every open connection once, close them S seconds later"),
    FaultSpec("string_seq", bool, True, "string_seq",
              "Bitget: seq, pseq and checksum as decimal strings (as UTA and the classic docs type them)"),
    FaultSpec("bitget_error", int, 30016, "bitget_error[=CODE]",
              "Bitget: each open connection gets one error event CODE (30016, 30006, ...) for one of "
              "its subscriptions, which the venue drops"),
]}


class FaultError(ValueError):
    """A --sim-fault that is not known or whose value does not parse."""


def parse_fault(spec: str) -> tuple[str, Any]:
    name, eq, raw = spec.partition("=")
    name = name.strip()
    if name not in FAULTS:
        raise FaultError(f"unknown simulator fault {name!r}; known: {', '.join(FAULTS)}")
    f = FAULTS[name]
    if not eq:
        return name, f.default
    try:
        if f.kind is bool:
            if raw.lower() in ("1", "true", "on", "yes"):
                return name, True
            if raw.lower() in ("0", "false", "off", "no"):
                return name, False
            raise ValueError(raw)
        value = f.kind(raw)
    except ValueError:
        raise FaultError(f"fault {name}: cannot read value {raw!r} (syntax {f.syntax})") from None
    if f.kind is float and name not in ("disconnect", "silence", "burst", "server_shutdown") and not 0.0 <= value <= 1.0:
        raise FaultError(f"fault {name}: probability must be in [0, 1], got {value}")
    if isinstance(value, (int, float)) and value < 0:
        raise FaultError(f"fault {name}: value must be >= 0, got {value}")
    return name, value


@dataclass(slots=True)
class Faults:
    """Current fault settings; 0/False means off. Counters of what was injected live in
    ``injected``."""
    gap: float = 0.0
    reorder: float = 0.0
    duplicate: float = 0.0
    bad_checksum: float = 0.0
    stale_snapshot: int = 0
    http_429: int = 0
    http_418: int = 0
    rest_down: int = 0
    lost_snapshot: int = 0
    disconnect: float = 0.0
    silence: float = 0.0
    malformed: float = 0.0
    oversize: float = 0.0
    no_pong: bool = False
    no_ping_check: bool = False
    burst: float = 0.0
    server_shutdown: float = 0.0    # one-shot: taken (set back to 0) by the Binance venue
    string_seq: bool = False
    bitget_error: int = 0           # an error code; each connection gets it once while set

    @classmethod
    def from_specs(cls, specs: list[str]) -> Faults:
        f = cls()
        for s in specs:
            name, value = parse_fault(s)
            setattr(f, name, value)
        return f

    def set(self, name: str, value: Any = None) -> None:
        if name not in FAULTS:
            raise FaultError(f"unknown simulator fault {name!r}")
        if value is None:
            value = FAULTS[name].default
        setattr(self, name, FAULTS[name].kind(value))

    def clear(self, name: str | None = None) -> None:
        for f in fields(self):
            if name is None or f.name == name:
                setattr(self, f.name, f.default)

    def active(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name)}


def help_text() -> str:
    width = max(len(f.syntax) for f in FAULTS.values())
    return "\n".join(f"  {f.syntax:<{width}}  {f.help}" for f in FAULTS.values())
