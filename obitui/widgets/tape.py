"""The trade tape of a market: time, venue, side, price and size of the last trades, newest
first, the big ones highlighted (line API; ``show`` prepares the lines, ``render_line`` reads)."""
from __future__ import annotations

import time
from dataclasses import dataclass

from rich.segment import Segment
from textual.strip import Strip

from obitui.widgets.styled import StyledLines


@dataclass(frozen=True)
class TapeLine:
    ts_ns: int
    venue: str          # the venue's short prefix (Bi, Bg, ...)
    buy: bool
    price: str
    size: str
    big: bool


def clock_text(ts_ns: int) -> str:
    """HH:MM:SS.mmm, UTC."""
    t = time.gmtime(ts_ns // 1_000_000_000)
    return f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{ts_ns // 1_000_000 % 1000:03d}"


class TradeTape(StyledLines):
    COMPONENT_CLASSES = {"tape--head", "tape--buy", "tape--sell", "tape--big", "tape--dim"}
    DEFAULT_CSS = """
    TradeTape { height: 1fr; width: 1fr; }
    TradeTape > .tape--head { text-style: bold; background: $panel; }
    TradeTape > .tape--buy { color: $success; }
    TradeTape > .tape--sell { color: $error; }
    TradeTape > .tape--big { text-style: bold reverse; }
    TradeTape > .tape--dim { color: $text-muted; }
    """

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.lines: list[TapeLine] = []
        self.pw, self.sw = 5, 4

    def show(self, lines: list[TapeLine]) -> None:
        if lines == self.lines:
            return
        self.lines = lines
        self.pw = max([5] + [len(t.price) for t in lines])
        self.sw = max([4] + [len(t.size) for t in lines])
        self.refresh()

    def _fields(self, width: int) -> tuple[bool, bool]:
        """(time shown, venue shown) at this width."""
        need = 5 + self.pw + 1 + self.sw          # side, price, size
        return width >= need + 16, width >= need + 3

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        with_time, with_venue = self._fields(width)
        if y == 0:
            head = ("time (UTC)   " if with_time else "") + ("   " if with_venue else "") + \
                "side " + "price".rjust(self.pw) + " " + "size".rjust(self.sw)
            return Strip([Segment(head.ljust(width), self.style_of("tape--head"))]).crop(0, width)
        k = y - 1
        if k >= len(self.lines):
            if k == 0:
                return Strip([Segment(" no trades yet".ljust(width),
                                      self.style_of("tape--dim"))]).crop(0, width)
            return Strip.blank(width)
        t = self.lines[k]
        style = self.style_of("tape--buy" if t.buy else "tape--sell")
        if t.big:
            style = style + self.style_of("tape--big")
        text = (f"{clock_text(t.ts_ns)} " if with_time else "") + (f"{t.venue:<3}" if with_venue else "") + \
            ("buy  " if t.buy else "sell ") + t.price.rjust(self.pw) + " " + t.size.rjust(self.sw)
        return Strip([Segment(text.ljust(width), style)]).crop(0, width)
