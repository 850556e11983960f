"""`--replay FILE`: the feeds a capture can drive, found by the venue descriptions from its
URLs and frames (``Venue.recognise``): Binance spot or USD-M streams, Bitget v2 or v3
channels."""
from __future__ import annotations

from obitui.capture import read_capture
from obitui.config import FeedConfig
from obitui.feeds.venue import FeedSpec, venues

MAX_FEEDS = 16


def feeds_from_capture(path: str) -> list[FeedConfig]:
    """One feed per venue, channel and symbol the capture holds, labelled like the defaults
    (with the symbol when a venue has several)."""
    found: list[FeedSpec] = []
    seen: set[tuple[str, str, str]] = set()
    errors: list[str] = []
    registered = list(venues().values())
    for rec in read_capture(path, errors):
        for v in registered:
            for spec in v.recognise(rec):
                key = (spec.venue, spec.channel, spec.symbol)
                if key not in seen:
                    seen.add(key)
                    found.append(spec)
    if not found:
        raise ValueError(f"{path}: no stream of a known venue found (Binance depth/trade, "
                         f"Bitget books/ticker)" + (f" ({len(errors)} bad lines)" if errors else ""))
    symbols_of: dict[str, set[str]] = {}
    for spec in found:
        symbols_of.setdefault(spec.venue, set()).add(spec.symbol)
    feeds: list[FeedConfig] = []
    for spec in found:
        v = venues()[spec.venue]
        label = v.label(spec.channel)
        if len(symbols_of[spec.venue]) > 1:
            label = f"{label}-{spec.symbol[:15 - len(label) - 1]}"
        feeds.append(FeedConfig(label, spec.venue, spec.channel, spec.symbol, stale_after=30.0,
                                **dict(spec.options)))
    return feeds[:MAX_FEEDS]
