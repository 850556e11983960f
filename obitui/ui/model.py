"""What the screens show, computed from the stats block's views: the markets of a config, a
book read cache, and the figures of a watchlist row. No Textual here."""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from obitui.config import Config, FeedConfig, feed_book_ids
from obitui.core.stats import BookView, StatsBlock
from obitui.widgets.format import LOCAL, decimals_needed, fmt_fixed, shown_decimals

UP, DOWN = "▲", "▼"


@dataclass(frozen=True)
class Book:
    """One book market: its slot in the stats block, ``venue:SYMBOL`` key, the book feed that
    serves it (index and config) and its fixed-point scales. A remote fleet's book (an attached
    console) has its ``host`` and the key ``host/venue:SYMBOL``."""
    slot: int
    key: str
    feed: int
    fc: FeedConfig
    digits: int
    qdigits: int
    host: str | None = None

    @property
    def market_key(self) -> str:
        """``venue:SYMBOL``, without the host (what a command names)."""
        return self.key.rpartition("/")[2]

    @property
    def venue(self) -> str:
        return self.market_key.split(":", 1)[0]

    @property
    def symbol(self) -> str:
        return self.market_key.split(":", 1)[1]

    @property
    def short(self) -> str:
        """``Bi BTCUSDT``: the venue's label prefix (as in feed labels) and the symbol."""
        return f"{self.fc.venue_info.label_prefix} {self.symbol}"


@dataclass(frozen=True)
class Market:
    """A symbol and its books, one per venue that lists it (slot order); a remote fleet's
    markets are its own (``host``), apart from this machine's and other hosts'."""
    symbol: str
    books: tuple[Book, ...]
    host: str | None = None

    @property
    def title(self) -> str:
        return self.symbol if self.host is None else f"{self.symbol} @ {self.host}"


def config_books(cfg: Config) -> list[Book]:
    """Every market a book feed serves, in book slot order."""
    seen: dict[str, Book] = {}
    for i, (f, ids) in enumerate(zip(cfg.feeds, feed_book_ids(cfg.feeds))):
        if f.is_book:
            for key, j in zip(f.book_keys, ids):
                if key not in seen:
                    seen[key] = Book(j, key, i, f, *f.scales_of(key.split(":", 1)[1]))
    return sorted(seen.values(), key=lambda b: b.slot)


def config_markets(books: list[Book]) -> list[Market]:
    """The books grouped by host and symbol, in the order of each group's first book."""
    by: dict[tuple[str | None, str], list[Book]] = {}
    for b in books:
        by.setdefault((b.host, b.symbol), []).append(b)
    return [Market(s, tuple(bs), h) for (h, s), bs in by.items()]


@dataclass(frozen=True)
class Layout:
    """What the console shows: the feeds (``cfg.feeds``, in feed slot order), the books, and
    per feed its host (None: this machine's fleet). A local fleet's layout never changes; an
    attached console's (``obitui.bus.mirror``) grows as hosts, feeds and books appear, each
    change a new ``generation``. ``attached``: remote fleets are shown (host columns)."""
    cfg: Config
    books: list[Book]
    hosts: list[str | None]
    generation: int = 0
    attached: bool = False


def local_layout(cfg: Config) -> Layout:
    """The layout of a local fleet's config."""
    return Layout(cfg, config_books(cfg), [None] * len(cfg.feeds))


class BookCache:
    """Book views read from the stats block, read again only when their slot's seqlock word
    moved (a word load instead of a 4 KB copy for a book that did not change)."""

    def __init__(self) -> None:
        self.views: dict[int, tuple[int, BookView | None]] = {}
        self.reads = 0

    def get(self, stats: StatsBlock, slot: int) -> BookView | None:
        if slot >= stats.n_books:
            return None
        seq = stats.seg.load_u64(stats.book_offset(slot))
        got = self.views.get(slot)
        if got is not None and got[0] == seq and not seq & 1:
            return got[1]
        self.reads += 1
        view = stats.read_book(slot)
        self.views[slot] = (seq, view)
        return view


def book_decimals(v: BookView, digits: int) -> int:
    """The decimals the book's best levels need (its tick, in effect; the wire's trailing
    zeros left out)."""
    return shown_decimals([p for p, _ in v.bids[:5] + v.asks[:5]], digits)


def mid_text(v: BookView, digits: int) -> str:
    """The exact mid (one more decimal when bid + ask is odd at the book's tick), '' without
    both sides."""
    if not v.bids or not v.asks:
        return ""
    twice = v.bids[0][0] + v.asks[0][0]
    return fmt_fixed(twice * 5, digits + 1, max(book_decimals(v, digits), decimals_needed(twice * 5, digits + 1)))


def price_text(value: int, v: BookView, digits: int) -> str:
    """A price at the decimals of the book's tick, or more when it needs them (never rounded)."""
    return fmt_fixed(value, digits, max(book_decimals(v, digits), decimals_needed(value, digits)))


def human(x: float) -> str:
    """A size in at most ~6 characters: 0.0123, 12.35, 1234, 12.3k, 4.56M."""
    a = abs(x)
    if a == 0:
        return "0"
    if a >= 1e9:
        return f"{x / 1e9:.3g}B"
    if a >= 1e6:
        return f"{x / 1e6:.3g}M"
    if a >= 1e4:
        return f"{x / 1e3:.3g}k"
    if a >= 100:
        return f"{x:.0f}"
    if a >= 1:
        return f"{x:.4g}"
    return f"{x:.3g}"


def age_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = max(0.0, seconds)
    if s < 10:
        return f"{s:.1f}s"
    if s < 100:
        return f"{s:.0f}s"
    if s < 6000:
        return f"{s / 60:.0f}m"
    return f"{s / 3600:.0f}h"


def change_pct(v: BookView) -> float | None:
    """24 h change of the last price in %, when the venue's ticker gives an open."""
    if v.day_open > 0 and v.ticker_last > 0:
        return 100.0 * (v.ticker_last - v.day_open) / v.day_open
    return None


BLOCKS = "▁▂▃▄▅▆▇█"


def spark(values: list[float], width: int, lo: float | None = None, hi: float | None = None) -> str:
    """The last ``width`` values as block characters between ``lo`` and ``hi`` (their range
    when not given)."""
    vals = values[-width:] if width > 0 else []
    if not vals:
        return ""
    a = min(vals) if lo is None else lo
    b = max(vals) if hi is None else hi
    span = b - a
    out = []
    for x in vals:
        f = 0.5 if span <= 0 else (min(b, max(a, x)) - a) / span
        out.append(BLOCKS[min(len(BLOCKS) - 1, int(f * len(BLOCKS)))])
    return "".join(out)


# ---------------------------------------------------------------- watchlist rows
@dataclass
class Row:
    """One watchlist row: the cells (column key -> (text, style word)) and the values it sorts
    by. ``bad``: an invalid or stale book, or one without data (floats to the top)."""
    book: Book
    cells: dict[str, tuple[str, str]] = field(default_factory=dict)
    sort: dict[str, object] = field(default_factory=dict)
    bad: bool = True
    last_price: int = 0
    tick: str = ""          # UP/DOWN: the last trade's price against the one before it


def fill_row(row: Row, v: BookView | None, now_ns: int, stale_s: float | None, feed_state: str) -> None:
    """Compute ``row``'s cells from the book view ``v`` (None: no data yet)."""
    b = row.book
    c = row.cells
    s = row.sort
    c["market"] = (b.short, "")
    s["market"] = b.key
    c["host"] = (b.host or LOCAL, "bad" if stale_s is not None else ("" if b.host else "dim"))
    s["host"] = b.host or ""
    if v is None or not v.exchange:
        row.bad = True
        c.update(state=("no data", "dim"))
        for k in ("mid", "spread", "obi", "spark", "flow", "trades", "last", "chg", "age"):
            c[k] = ("", "")
            s[k] = -math.inf
        s["state"] = 0
        return
    stale = stale_s is not None
    row.bad = stale or not v.valid
    if stale:
        c["state"] = ("stale", "bad")
    elif v.valid:
        c["state"] = ("synced", "ok")
    else:
        c["state"] = ((v.reason or feed_state or "invalid").split(":")[0][:12] or "invalid", "bad")
    s["state"] = 0 if row.bad else 1
    m = v.mid
    c["mid"] = (mid_text(v, b.digits), "dim" if row.bad else "")
    s["mid"] = (m or 0) / 10 ** b.digits
    bps = v.spread_bps
    c["spread"] = ("" if bps is None else f"{bps:.2f}", "")
    s["spread"] = -math.inf if bps is None else bps
    c["obi"] = (f"{v.obi:+.3f}", "pos" if v.obi >= 0 else "neg")
    s["obi"] = v.obi
    c["spark"] = (spark(v.obi_history, 10, -1.0, 1.0), "pos" if v.obi >= 0 else "neg")
    s["spark"] = v.obi
    flow = v.flow_1s / 10 ** b.qdigits
    c["flow"] = (human(flow) if flow else "0", "pos" if flow > 0 else ("neg" if flow < 0 else "dim"))
    s["flow"] = flow
    n = v.buy_count_1s + v.sell_count_1s
    c["trades"] = (str(n), "" if n else "dim")
    s["trades"] = n
    # the last trade; without a trade feed (Bitget's default fleet has a ticker), the ticker's last
    last = v.last_trade_price if v.last_trade_side else v.ticker_last
    if last:
        if row.last_price and last != row.last_price:
            row.tick = UP if last > row.last_price else DOWN
        row.last_price = last
        c["last"] = (f"{price_text(last, v, b.digits)}{row.tick or ' '}",
                     "up" if row.tick == UP else ("down" if row.tick == DOWN else ""))
        s["last"] = last / 10 ** b.digits
    else:
        c["last"] = ("", "")
        s["last"] = -math.inf
    chg = change_pct(v)
    c["chg"] = ("" if chg is None else f"{chg:+.2f}%", "" if chg is None else ("pos" if chg >= 0 else "neg"))
    s["chg"] = -math.inf if chg is None else chg
    age = (now_ns - v.last_update_ns) / 1e9 if v.last_update_ns else None
    c["age"] = (age_text(age), "bad" if age is not None and age > 5 else "dim")
    s["age"] = math.inf if age is None else age


def wall_clock() -> int:
    return time.time_ns()


Clock = Callable[[], int]
