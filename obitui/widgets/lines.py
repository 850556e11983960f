"""One-line widgets of the market view: the venues' tickers and the cross-venue line (what
``show`` is given is drawn as is; a part that does not fit the width is left out whole)."""
from __future__ import annotations

from typing import Any

from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip

from obitui.widgets.styled import StyledLines


class PartsLine(StyledLines):
    """A line of (text, style word) parts (or lists of them: a group, kept or dropped whole);
    the parts that do not fit are dropped, last first, never cut. Subclasses name their style words in COMPONENT_CLASSES as ``<prefix>--<word>``."""
    PREFIX = "parts"
    COMPONENT_CLASSES: set[str] = set()
    DEFAULT_CSS = """
    PartsLine { height: 1; }
    """

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.rows: list[list[Any]] = []

    def show(self, rows: list[list[Any]]) -> None:
        if rows != self.rows:
            self.rows = rows
            self.refresh()

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        if y >= len(self.rows):
            return Strip.blank(width)
        segs, used = [], 0
        for part in self.rows[y]:
            group = part if isinstance(part, list) else [part]      # a group is kept or dropped whole
            n = sum(len(t) for t, _ in group)
            if used + n > width:
                break
            for text, word in group:
                style = self.style_of(f"{self.PREFIX}--{word}") if word else Style()
                segs.append(Segment(text, style))
            used += n
        segs.append(Segment(" " * (width - used)))
        return Strip(segs).crop(0, width)


class TickerLine(PartsLine):
    """Per venue with a ticker: last price, 24 h change, high, low and volume."""
    PREFIX = "ticker"
    COMPONENT_CLASSES = {"ticker--label", "ticker--value", "ticker--pos", "ticker--neg", "ticker--dim"}
    DEFAULT_CSS = """
    TickerLine { height: auto; max-height: 2; }
    TickerLine > .ticker--label { color: $text-muted; }
    TickerLine > .ticker--value { text-style: bold; }
    TickerLine > .ticker--pos { color: $success; }
    TickerLine > .ticker--neg { color: $error; }
    TickerLine > .ticker--dim { color: $text-muted; }
    """

    def show(self, rows: list[list[Any]]) -> None:
        super().show(rows)
        self.styles.height = max(1, len(rows))


class CrossVenueLine(PartsLine):
    """The mid difference between two venues in bps, CROSSED when one venue's bid is above the
    other's ask, and a sparkline of the difference."""
    PREFIX = "cross"
    COMPONENT_CLASSES = {"cross--label", "cross--value", "cross--pos", "cross--neg", "cross--alert",
                         "cross--dim"}
    DEFAULT_CSS = """
    CrossVenueLine { height: 1; }
    CrossVenueLine > .cross--label { color: $text-muted; }
    CrossVenueLine > .cross--value { text-style: bold; }
    CrossVenueLine > .cross--pos { color: $success; }
    CrossVenueLine > .cross--neg { color: $error; }
    CrossVenueLine > .cross--alert { color: $text; background: $error; text-style: bold; }
    CrossVenueLine > .cross--dim { color: $text-muted; }
    """


class FeedsLine(PartsLine):
    """The states of the feeds that serve a market (a part per feed, never cut)."""
    PREFIX = "feeds"
    COMPONENT_CLASSES = {"feeds--label", "feeds--ok", "feeds--bad", "feeds--dim"}
    DEFAULT_CSS = """
    FeedsLine { height: 1; padding: 0 1; }
    FeedsLine > .feeds--label { color: $text-muted; }
    FeedsLine > .feeds--ok { color: $success; }
    FeedsLine > .feeds--bad { color: $error; text-style: bold; }
    FeedsLine > .feeds--dim { color: $text-muted; }
    """

    def render_line(self, y: int) -> Strip:
        return super().render_line(y)
