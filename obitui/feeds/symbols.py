"""Per-symbol fixed-point scales from the venues' symbol info, asked once at start.

A book keeps prices and quantities as int64 fixed point. One scale for every symbol does not
work: 8 decimals overflow int64 beyond 9.2e10 units, and memecoin books hold 1e11 and more.
So each feed whose config leaves the scales to the venue (``scales = "venue"``, the default)
takes the price decimals from the symbol's tick size and the quantity decimals from its step
size, read by each venue's description (``Venue.scales``: Binance's exchangeInfo filters,
Bitget's symbol precisions).

When the venue does not answer (no route, a timeout, an unknown symbol), the configured scales
stay and the reason is logged; a value that then does not fit is a counted ``out_of_range``
reject and an invalid book, never a wrapped number.
"""
from __future__ import annotations

import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from obitui.config import Config, FeedConfig
from obitui.feeds.venue import venue as venue_named

log = logging.getLogger("obitui.symbols")

TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Scales:
    price_digits: int
    qty_digits: int


class SymbolInfoError(RuntimeError):
    """The venue's symbol info could not be read; the message says why, for the log.
    ``status``: the HTTP status when the venue answered with an error."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class UnlistedSymbols(ValueError):
    """Symbols the fleet was asked to watch that a venue says it does not list."""


def step_decimals(step: str) -> int:
    """Decimals of a tick or step size written as a decimal string ("0.01000000" -> 2,
    "1.00000000" -> 0, "0.1" -> 1)."""
    try:
        d = Decimal(step)
    except InvalidOperation:
        raise SymbolInfoError(f"step {step!r} is not a decimal") from None
    if not d.is_finite() or d <= 0:
        raise SymbolInfoError(f"step {step!r} is not a positive decimal")
    exp = d.normalize().as_tuple().exponent
    assert isinstance(exp, int)
    return max(0, -exp)


def get_json(url: str) -> Any:
    """The decoded JSON answer of a GET (blocking: called once at start, before any child)."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as exc:
        raise SymbolInfoError(f"HTTP {exc.code} from {url}", exc.code) from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SymbolInfoError(f"{url}: {reason}") from None
    except ValueError as exc:
        raise SymbolInfoError(f"{url}: not JSON ({exc})") from None


def venue_scales(venue_name: str, rest_url: str, symbols: list[str]) -> dict[str, Scales]:
    """The scales of ``symbols`` from the symbol info of the venue at ``rest_url``."""
    return venue_named(venue_name).scales(rest_url, symbols)


def apply_venue_scales(cfg: Config) -> list[str]:
    """Set ``digits``/``qty_digits`` of every feed with ``scales = "venue"`` from its venue's
    symbol info (one query per venue endpoint). Returns one line per outcome, for the log."""
    groups: dict[tuple[str, str], list[FeedConfig]] = {}
    for f in cfg.feeds:
        if f.scales == "venue":
            groups.setdefault((f.venue, f.rest_url), []).append(f)
    lines = []
    for (venue, rest_url), feeds in groups.items():
        symbols = sorted({sym for f in feeds for sym in f.symbols})
        try:
            if not rest_url:
                raise SymbolInfoError("no REST URL")
            found = venue_scales(venue, rest_url, symbols)
        except SymbolInfoError as exc:
            if exc.status == 400:           # the venue refused the names: one it does not list?
                _refuse_unlisted(venue, rest_url, symbols)
            lines.append(f"{venue}: symbol info unavailable ({exc}); keeping the configured scales")
            log.warning(lines[-1])
            continue
        for f in feeds:
            scales = []
            for sym in f.symbols:
                sc = found.get(sym)
                if sc is None or not (0 <= sc.price_digits <= 18 and 0 <= sc.qty_digits <= 18):
                    lines.append(f"{f.label}: {venue} has no usable scales for {sym}; keeping "
                                 f"{f.digits}/{f.qdigits} decimals")
                    log.warning(lines[-1])
                    continue
                scales.append((sym, sc.price_digits, sc.qty_digits))
                if len(f.symbols) <= 4:
                    lines.append(f"{f.label}: {sym} prices at {sc.price_digits} decimals, "
                                 f"quantities at {sc.qty_digits} (venue tick/step sizes)")
                    log.info(lines[-1])
            if len(f.symbols) > 4:
                lines.append(f"{f.label}: scales of {len(scales)}/{len(f.symbols)} markets from the "
                             f"venue's tick/step sizes")
                log.info(lines[-1])
            f.market_scales = tuple(scales)
            if scales and scales[0][0] == f.symbol:    # the feed's own scales: its first market's
                f.digits, f.qty_digits = scales[0][1], scales[0][2]
    return lines


def _refuse_unlisted(venue: str, rest_url: str, symbols: list[str]) -> None:
    """UnlistedSymbols naming those of ``symbols`` the venue's market list (asked once, only
    after the venue refused a symbol query) does not hold; nothing when the list cannot be read
    or holds them all (the refusal was about something else: logged by the caller)."""
    v = venue_named(venue)
    if v.markets_of is None:
        return
    try:
        listed = v.markets(rest_url)
    except SymbolInfoError:
        return
    missing = [s for s in symbols if s not in listed]
    if missing:
        raise UnlistedSymbols(f"{venue} does not list {', '.join(missing[:10])}"
                              + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
                              + " (check --symbols or the config's symbols)")
