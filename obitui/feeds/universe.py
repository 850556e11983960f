"""Which markets to watch: ``--symbols BTCUSDT,ETHUSDT`` names them, ``--symbols top:N`` asks the
venues for the N most traded.

``top_symbols`` reads each venue's market list once at start (``Venue.markets``: its symbol list
and its 24 h tickers, blocking HTTP, before any child runs) and keeps the markets quoted in USDT
and listed as trading on every venue given, ranked by the sum of their 24 h quote volumes
(USDT), ties by name. Two APIs of one exchange that read the same list (Bitget v2 and v3) count
once. A venue that does not answer is an error naming it; fewer qualifying markets than asked
is a warning, and those that qualify are the answer."""
from __future__ import annotations

import logging
import re

from obitui.feeds.symbols import SymbolInfoError
from obitui.feeds.venue import Venue

log = logging.getLogger("obitui.universe")

QUOTE = "USDT"
MAX_TOP = 1000
SYMBOL_RE = re.compile(r"^[A-Z0-9]+$")


class UniverseError(SymbolInfoError):
    """The markets to watch could not be found: a venue did not answer, or none qualifies."""


def parse_symbols(text: str) -> list[str] | int:
    """The ``--symbols`` value: ``BTCUSDT,ethusdt`` -> ``["BTCUSDT", "ETHUSDT"]`` (upper-cased,
    letters and digits only, duplicates dropped keeping the order); ``top:N`` -> N (1 to
    1000). ValueError says what is wrong."""
    word = text.strip()
    head, colon, tail = word.partition(":")
    if colon:
        if head.strip().lower() != "top":
            raise ValueError(f"--symbols {word!r}: a list of symbols (BTCUSDT,ETHUSDT) or top:N")
        try:
            n = int(tail.strip())
        except ValueError:
            raise ValueError(f"--symbols {word!r}: top:N takes a whole number, 1 to {MAX_TOP}") from None
        if not 1 <= n <= MAX_TOP:
            raise ValueError(f"--symbols {word!r}: N must be 1 to {MAX_TOP}, not {n}")
        return n
    symbols = [s.strip().upper() for s in word.split(",")]
    bad = [s for s in symbols if s and not SYMBOL_RE.match(s)]
    if bad:
        raise ValueError(f"--symbols: letters and digits only, not {', '.join(map(repr, bad))}")
    out = list(dict.fromkeys(s for s in symbols if s))
    if not out:
        raise ValueError("--symbols: no symbol given (BTCUSDT,ETHUSDT or top:N)")
    return out


def top_symbols(n: int, venue_urls: list[tuple[Venue, str]]) -> list[str]:
    """The ``n`` markets quoted in USDT and trading on every one of the venues (a venue and its
    REST base), most traded first: by the sum of their 24 h quote volumes, ties by name.
    UniverseError when a venue does not answer (naming it) or when no market qualifies;
    fewer than ``n`` qualifying is logged and those are returned."""
    if n < 1:
        raise ValueError(f"top {n}: at least 1")
    if not venue_urls:
        raise UniverseError("no venue to rank the markets on")
    lists: dict[tuple[str, str], tuple[str, dict[str, tuple[str, float]]]] = {}
    for v, url in venue_urls:
        # two APIs of one exchange reading the same list (Bitget v2 and v3) count once
        key = (url.rstrip("/"), getattr(v, "info_path", v.name))
        if key in lists:
            continue
        try:
            lists[key] = (v.name, v.markets(url))
        except SymbolInfoError as exc:
            raise UniverseError(f"{v.name} at {url} did not list its markets: {exc}") from None
    names = [name for name, _ in lists.values()]
    markets = [m for _, m in lists.values()]
    volume: dict[str, float] = {}
    for sym, (quote, _) in markets[0].items():
        if quote != QUOTE or not all(m.get(sym, ("", 0.0))[0] == QUOTE for m in markets[1:]):
            continue
        volume[sym] = sum(m[sym][1] for m in markets)
    ranked = sorted(volume, key=lambda s: (-volume[s], s))
    if not ranked:
        raise UniverseError(f"no market quoted in {QUOTE} is listed on {' and '.join(names)}")
    if len(ranked) < n:
        log.warning("top %d: only %d markets quoted in %s are listed on %s; watching those %d",
                    n, len(ranked), QUOTE, " and ".join(names), len(ranked))
    return ranked[:n]
