"""`--replay FILE`: the feeds a capture can drive, found by the venue descriptions from its
URLs and frames (``Venue.recognise``): Binance spot or USD-M streams, Bitget v2 or v3
channels."""
from __future__ import annotations

from obitui.capture import read_capture
from obitui.config import FeedConfig, split_processes
from obitui.feeds.venue import FeedSpec, venues

MAX_FEEDS = 16


def feeds_from_capture(path: str) -> list[FeedConfig]:
    """One feed per venue and channel the capture holds, with every symbol it has, labelled
    like the defaults."""
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
    # one feed per venue and channel (and options), carrying all of its symbols, as live
    groups: dict[tuple[str, str, tuple], list[str]] = {}
    for spec in found:
        groups.setdefault((spec.venue, spec.channel, spec.options), []).append(spec.symbol)
    feeds: list[FeedConfig] = []
    labels: set[str] = set()
    for (venue_name, channel, options), symbols in groups.items():
        v = venues()[venue_name]
        label = v.label(channel)
        n = 2
        while label in labels:                 # the same channel under other options (instType)
            label = f"{v.label(channel)}-{n}"
            n += 1
        labels.add(label)
        f = FeedConfig(label, venue_name, channel, symbols=tuple(symbols), stale_after=30.0, **dict(options))
        # a replay serves every stream on one connection; a capture of more than the venue's
        # default per connection goes on one connection all the same, up to its hard limit
        if len(f.symbols) > f.connection_size:
            f.per_connection = min(len(f.symbols), v.max_per_connection)
        feeds.append(f)
    return split_processes(feeds[:MAX_FEEDS])
