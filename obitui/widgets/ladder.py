"""Depth ladder of one book, drawn line by line (Textual line API): asks above the spread line,
bids below, price, size and a cumulative-size bar, best levels highlighted."""
from __future__ import annotations

from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip
from textual.widget import Widget

from obitui.core.fixed import format_fixed
from obitui.core.stats import BookView

BAR = "█"


def fmt(value: int, digits: int, decimals: int) -> str:
    try:
        return format_fixed(value, digits, min(decimals, digits))
    except ValueError:
        return format_fixed(value, digits, digits)


class DepthLadder(Widget):
    COMPONENT_CLASSES = {"ladder--bid", "ladder--ask", "ladder--best", "ladder--bar-bid",
                         "ladder--bar-ask", "ladder--head", "ladder--invalid", "ladder--dim"}
    DEFAULT_CSS = """
    DepthLadder { height: 1fr; }
    """

    def __init__(self, key: str, digits: int = 8, qdigits: int | None = None, **kw: object) -> None:
        """``digits``/``qdigits``: the fixed-point scales of the book's prices and quantities
        (per symbol; qdigits defaults to digits)."""
        super().__init__(**kw)  # type: ignore[arg-type]
        self.key = key
        self.digits = digits
        self.qdigits = digits if qdigits is None else qdigits
        self.view: BookView | None = None
        self.feed_state = ""
        self.stale_s: float | None = None
        self._pd = digits
        self._qd = self.qdigits

    def show(self, view: BookView | None, feed_state: str = "", stale_s: float | None = None) -> None:
        """``stale_s``: the engine has not published for this long (its figures are frozen:
        the book is shown greyed, marked STALE, never as live)."""
        self.view = view
        self.feed_state = feed_state
        self.stale_s = stale_s
        self.refresh()

    # ------------------------------------------------------------ drawing
    def _head(self, width: int) -> list[Segment]:
        v = self.view
        head = self.get_component_rich_style("ladder--head")
        if v is None or not v.exchange:
            return [Segment(f" {self.key}: no data yet".ljust(width)[:width], head)]
        badge_style = head if v.valid else self.get_component_rich_style("ladder--invalid")
        badge = " VALID " if v.valid else " INVALID "
        if self.stale_s is not None:
            badge_style = self.get_component_rich_style("ladder--dim")
            badge = f" STALE {self.stale_s:.1f}s "
        text = f" {v.exchange}:{v.symbol} #{v.update_id}"
        if v.bids and v.asks:
            bid, ask = v.bids[0][0], v.asks[0][0]
            pd = shown_decimals([p for p, _ in v.bids[:20] + v.asks[:20]], self.digits)
            tick = 10 ** max(0, self.digits - pd)
            spread = ask - bid
            mid2 = bid + ask
            bps = spread * 20000 / mid2 if mid2 else 0.0
            # the mid is exact: (bid + ask) / 2 written with one more decimal
            mid = fmt(mid2 * 5, self.digits + 1, pd + 1)
            text += f"  mid {mid}  spread {spread // tick}t {bps:.2f}bps"
        if v.crossed:
            text += " CROSSED"
        rest = max(0, width - len(badge))
        return [Segment(badge, badge_style + Style(reverse=True)), Segment(text.ljust(rest)[:rest], head)]

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        height = self.size.height
        if y == 0:
            return Strip(self._head(width)).crop(0, width)
        v = self.view
        if v is None or not v.valid or (not v.bids and not v.asks):
            if y == 1 and v is not None:
                msg = f" book invalid ({self.feed_state or 'waiting'})"
                return Strip([Segment(msg.ljust(width)[:width], self.get_component_rich_style("ladder--dim"))])
            return Strip.blank(width)
        rows = height - 2                      # head + spread line
        n = max(1, rows // 2)
        asks = v.asks[:n]
        bids = v.bids[:n]
        # show prices and sizes with the decimals they need, not the wire's trailing zeros
        self._pd = shown_decimals([p for p, _ in asks + bids], self.digits)
        self._qd = shown_decimals([q for _, q in asks + bids], self.qdigits)
        cum_a = _cumulative([q for _, q in asks])
        cum_b = _cumulative([q for _, q in bids])
        top = max(cum_a[-1] if cum_a else 0, cum_b[-1] if cum_b else 0) or 1
        ask_rows = n
        if y <= ask_rows:
            k = ask_rows - y                   # row y shows the k-th best ask (far ones first)
            if k >= len(asks):
                return Strip.blank(width)
            return self._row(asks[k], cum_a[k], top, width, "ask", k == 0)
        if y == ask_rows + 1:
            return self._spread_line(width)
        k = y - ask_rows - 2
        if k >= len(bids):
            return Strip.blank(width)
        return self._row(bids[k], cum_b[k], top, width, "bid", k == 0)

    def _spread_line(self, width: int) -> Strip:
        v = self.view
        assert v is not None
        dim = self.get_component_rich_style("ladder--dim")
        text = f" OBI {v.obi:+.4f}"
        return Strip([Segment(("─" * 2 + text + " ").ljust(width, "─")[:width], dim)])

    def _bar_style(self, side: str) -> Style:
        """The size bars are a 40% tint of the side's colour; with 16 colours a tint has no
        nearer colour than grey, so both sides' bars looked alike: there they take the side's
        full colour (the prices' green / red) instead."""
        if self.app.console.color_system in ("standard", "windows"):
            return Style(color=self.get_component_rich_style(f"ladder--{side}").color)
        return self.get_component_rich_style(f"ladder--bar-{side}")

    def _row(self, level: tuple[int, int], cum: int, top: int, width: int, side: str, best: bool) -> Strip:
        v = self.view
        assert v is not None
        price = fmt(level[0], self.digits, self._pd)
        size = fmt(level[1], self.qdigits, self._qd)
        style = self.get_component_rich_style(f"ladder--{side}")
        if self.stale_s is not None:       # frozen figures: greyed
            style = self.get_component_rich_style("ladder--dim")
        elif best:
            style = style + self.get_component_rich_style("ladder--best")
        bar_style = self._bar_style(side)
        text = f" {price:>12} {size:>11} "
        bar_w = max(0, width - len(text))
        filled = int(round(bar_w * cum / top)) if top else 0
        return Strip([Segment(text[:width], style), Segment(BAR * min(filled, bar_w), bar_style),
                      Segment(" " * max(0, bar_w - filled))]).crop(0, width)


def _cumulative(qs: list[int]) -> list[int]:
    out, acc = [], 0
    for q in qs:
        acc += q
        out.append(acc)
    return out


def shown_decimals(values: list[int], digits: int) -> int:
    """The fewest decimals that write every value exactly (at least 0)."""
    need = 0
    for v in values:
        d = digits
        while d > need and v % 10 == 0:
            v //= 10
            d -= 1
        need = max(need, d)
    return need
