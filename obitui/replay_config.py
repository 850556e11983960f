"""`--replay FILE`: the feeds a capture can drive, found from its venues, streams and symbols."""
from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import orjson

from obitui.capture import read_capture
from obitui.config import FeedConfig


def feeds_from_capture(path: str) -> list[FeedConfig]:
    """Binance depth/trade streams named in the capture's URLs, Bitget books/ticker channels
    found in its frames; one feed each, labelled like the defaults (with the symbol when a
    capture holds several)."""
    binance: list[tuple[str, str]] = []    # (channel, SYMBOL)
    bitget: list[tuple[str, str, str]] = []  # (channel, SYMBOL, instType)
    errors: list[str] = []
    for rec in read_capture(path, errors):
        if rec.venue == "binance" and rec.kind == "ws":
            u = urlparse(rec.url)
            streams = parse_qs(u.query).get("streams", [""])[0].split("/") if u.query else [u.path.rsplit("/", 1)[-1]]
            for s in streams:
                sym, _, kind = s.partition("@")
                channel = "depth" if kind.startswith("depth") else "trade" if kind == "trade" else ""
                if channel and (channel, sym.upper()) not in binance:
                    binance.append((channel, sym.upper()))
        elif rec.venue == "bitget" and rec.kind == "ws":
            try:
                msg = orjson.loads(rec.data)
            except orjson.JSONDecodeError:
                continue
            arg = msg.get("arg") if isinstance(msg, dict) else None
            if not isinstance(arg, dict) or "data" not in msg:
                continue
            ch = arg.get("channel", arg.get("topic"))
            sym = arg.get("instId", arg.get("symbol"))
            if ch in ("books", "ticker") and isinstance(sym, str) and \
                    not any(b[0] == ch and b[1] == sym for b in bitget):
                bitget.append((ch, sym, str(arg.get("instType", "SPOT"))))
    feeds: list[FeedConfig] = []
    many_b = len({s for _, s in binance}) > 1
    many_g = len({s for _, s, _ in bitget}) > 1
    for channel, sym in binance:
        base = "Bi-OB" if channel == "depth" else "Bi-TR"
        label = f"{base}-{sym[:9]}" if many_b else base
        feeds.append(FeedConfig(label, "binance", channel, sym, stale_after=30.0))
    for channel, sym, inst_type in bitget:
        base = "Bg-OB" if channel == "books" else "Bg-PR"
        label = f"{base}-{sym[:9]}" if many_g else base
        feeds.append(FeedConfig(label, "bitget", channel, sym, inst_type=inst_type, stale_after=30.0))
    if not feeds:
        raise ValueError(f"{path}: no Binance depth/trade or Bitget books/ticker data found"
                         + (f" ({len(errors)} bad lines)" if errors else ""))
    return feeds[:16]
