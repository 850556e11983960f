"""Depth ladder of one book, drawn line by line (Textual line API): asks above the spread line,
bids below, price, size and a cumulative-size bar, best levels highlighted.

Textual calls ``render_line`` for every line of every frame it draws, as often as it likes:
it only reads. What it draws is prepared once per update, in ``show`` (a :class:`LadderPlan`)."""
from __future__ import annotations

from dataclasses import dataclass

from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip

from obitui.core.stats import TOP_N, BookView
from obitui.widgets.format import decimals_needed, fit_parts, fmt_fixed, shown_decimals
from obitui.widgets.styled import StyledLines

__all__ = ["BAR", "DepthLadder", "LadderPlan", "plan_ladder", "shown_decimals"]

BAR = "█"


@dataclass(frozen=True, slots=True)
class LadderPlan:
    """The figures of one drawable book view, whatever the ladder's height. How many levels a
    side shows (``n``) follows the height, which can change between an update and a draw, so
    the figures are kept for every ``n``: ``pd[n]`` / ``qd[n]`` are the decimals that write
    the prices / sizes of the ``n`` best levels of both sides exactly (the wire's trailing
    zeros left out), ``cum_asks[k]`` / ``cum_bids[k]`` the size of the ``k + 1`` best levels."""
    asks: list[tuple[int, int]]
    bids: list[tuple[int, int]]
    cum_asks: list[int]
    cum_bids: list[int]
    pd: list[int]
    qd: list[int]

    def decimals(self, n: int) -> tuple[int, int]:
        k = min(n, len(self.pd) - 1)
        return self.pd[k], self.qd[k]

    def top(self, n: int) -> int:
        """The longest bar when ``n`` levels a side are shown (at least 1)."""
        na, nb = min(n, len(self.asks)), min(n, len(self.bids))
        return max(self.cum_asks[na - 1] if na else 0, self.cum_bids[nb - 1] if nb else 0) or 1


def plan_ladder(view: BookView | None, digits: int, qdigits: int) -> tuple[str, LadderPlan | None]:
    """The head's text (after its badge; '' without data) and the plan of the levels (None when
    the book is not drawable: no data, invalid or empty)."""
    if view is None or not view.exchange:
        return "", None
    v = view
    asks, bids = v.asks[:TOP_N], v.bids[:TOP_N]
    parts = []
    if bids and asks:
        bid, ask = bids[0][0], asks[0][0]
        pd = shown_decimals([p for p, _ in bids + asks], digits)
        tick = 10 ** max(0, digits - pd)
        spread = ask - bid
        mid2 = bid + ask
        bps = spread * 20000 / mid2 if mid2 else 0.0
        # the mid is exact: (bid + ask) / 2 written with one more decimal
        mid = fmt_fixed(mid2 * 5, digits + 1, decimals_needed(mid2 * 5, digits + 1))
        parts += [f"mid {mid}", f"{bps:.2f}bps", f"spread {spread // tick}t"]
    if v.crossed:
        parts.insert(0, "CROSSED")
    # parts two spaces apart: a head too long for the ladder loses its last parts, whole
    text = " " + "  ".join(parts + [f"#{v.update_id}", f"{v.exchange}:{v.symbol}"])
    if not v.valid or (not bids and not asks):
        return text, None
    pds, qds = [0], [0]
    for k in range(max(len(asks), len(bids))):
        levels = asks[k:k + 1] + bids[k:k + 1]          # the k-th best of each side
        pds.append(max([pds[-1]] + [decimals_needed(p, digits) for p, _ in levels]))
        qds.append(max([qds[-1]] + [decimals_needed(q, qdigits) for _, q in levels]))
    return text, LadderPlan(asks, bids, _cumulative([q for _, q in asks]),
                            _cumulative([q for _, q in bids]), pds, qds)


class DepthLadder(StyledLines):
    COMPONENT_CLASSES = {"ladder--bid", "ladder--ask", "ladder--best", "ladder--bar-bid",
                         "ladder--bar-ask", "ladder--head", "ladder--invalid", "ladder--dim"}
    DEFAULT_CSS = """
    DepthLadder { height: 1fr; }
    DepthLadder > .ladder--bid { color: $success; }
    DepthLadder > .ladder--ask { color: $error; }
    DepthLadder > .ladder--best { text-style: bold reverse; }
    DepthLadder > .ladder--bar-bid { color: $success 40%; }
    DepthLadder > .ladder--bar-ask { color: $error 40%; }
    DepthLadder > .ladder--head { color: $text; background: $panel; }
    DepthLadder > .ladder--invalid { color: $warning; background: $panel; }
    DepthLadder > .ladder--dim { color: $text-muted; }
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
        self.head_text = ""
        self.plan: LadderPlan | None = None
        # what render_line made since the last show or restyle, for one size and colour system
        # (a memo: the same inputs draw the same lines; a restyle of the border, the focus
        # moving, draws every line again with the same figures): {"key": (width, height,
        # colours), "widths": (price, size) columns, y: Strip}
        self._memo: dict[object, object] = {}

    def show(self, view: BookView | None, feed_state: str = "", stale_s: float | None = None) -> None:
        """The update path: take a new view and prepare all that ``render_line`` reads.
        ``stale_s``: the engine has not published for this long (its figures are frozen: the
        book is shown greyed, marked STALE, never as live)."""
        old = self.view
        if (view is not None and old is not None and stale_s is None and self.stale_s is None
                and feed_state == self.feed_state and _drawn(view) == _drawn(old)):
            return              # all this draws is on screen already
        self.view = view
        self.feed_state = feed_state
        self.stale_s = stale_s
        self.head_text, self.plan = plan_ladder(view, self.digits, self.qdigits)
        self._memo.clear()
        self.refresh()

    def notify_style_update(self) -> None:
        self._memo.clear()             # the component styles (colours) may have changed
        super().notify_style_update()

    # ------------------------------------------------------------ drawing
    def _head(self, width: int) -> list[Segment]:
        v = self.view
        head = self.style_of("ladder--head")
        if v is None or not v.exchange:
            return [Segment(f" {self.key}: no data yet".ljust(width)[:width], head)]
        badge_style = head if v.valid else self.style_of("ladder--invalid")
        badge = " VALID " if v.valid else " INVALID "
        if self.stale_s is not None:
            badge_style = self.style_of("ladder--dim")
            badge = f" STALE {self.stale_s:.1f}s "
        rest = max(0, width - len(badge))
        return [Segment(badge, badge_style + Style(reverse=True)),
                Segment(fit_parts(self.head_text, rest).ljust(rest), head)]

    def render_line(self, y: int) -> Strip:
        """A pure read of what ``show`` prepared (Textual calls this for every line it draws),
        each line made once per update and size."""
        memo = self._memo
        width, height = self.size
        key = (width, height, self.app.console.color_system)
        if memo.get("key") != key:
            memo.clear()
            memo["key"] = key
        line = memo.get(y)
        if line is None:
            line = memo[y] = self._render_line(y, width, height)
        return line  # type: ignore[return-value]

    def _render_line(self, y: int, width: int, height: int) -> Strip:
        if y == 0:
            return Strip(self._head(width)).crop(0, width)
        v = self.view
        plan = self.plan
        if v is None or plan is None:
            if y == 1 and v is not None:
                msg = f" book invalid ({self.feed_state or 'waiting'})"
                return Strip([Segment(msg.ljust(width)[:width], self.style_of("ladder--dim"))])
            return Strip.blank(width)
        rows = height - 2                      # head + spread line
        n = max(1, rows // 2)
        # prices and sizes with the decimals the shown levels need, not the wire's trailing zeros
        pd, qd = plan.decimals(n)
        top = plan.top(n)
        ask_rows = n
        if y <= ask_rows:
            k = ask_rows - y                   # row y shows the k-th best ask (far ones first)
            if k >= min(n, len(plan.asks)):
                return Strip.blank(width)
            return self._row(plan.asks[k], plan.cum_asks[k], top, width, "ask", k == 0, pd, qd)
        if y == ask_rows + 1:
            return self._spread_line(width)
        k = y - ask_rows - 2
        if k >= min(n, len(plan.bids)):
            return Strip.blank(width)
        return self._row(plan.bids[k], plan.cum_bids[k], top, width, "bid", k == 0, pd, qd)

    def _spread_line(self, width: int) -> Strip:
        v = self.view
        assert v is not None
        dim = self.style_of("ladder--dim")
        text = f" OBI {v.obi:+.4f}"
        return Strip([Segment(("─" * 2 + text + " ").ljust(width, "─")[:width], dim)])

    def _bar_style(self, side: str) -> Style:
        """The size bars are a 40% tint of the side's colour; with 16 colours a tint has no
        nearer colour than grey, so both sides' bars looked alike: there they take the side's
        full colour (the prices' green / red) instead."""
        if self.app.console.color_system in ("standard", "windows"):
            return Style(color=self.style_of(f"ladder--{side}").color)
        return self.style_of(f"ladder--bar-{side}")

    def _widths(self, pd: int, qd: int) -> tuple[int, int]:
        """Price and size column widths: the widest price shown is the highest (the farthest
        ask, or the best bid without asks), the widest size the largest cumulative one (kept
        with the lines: the same for every row of an update and size)."""
        widths = self._memo.get("widths")
        if widths is None:
            widths = self._memo["widths"] = self._widths_now(pd, qd)
        return widths  # type: ignore[return-value]

    def _widths_now(self, pd: int, qd: int) -> tuple[int, int]:
        plan = self.plan
        assert plan is not None
        n = max(1, (self.size.height - 2) // 2)
        na = min(n, len(plan.asks))
        hi = plan.asks[na - 1][0] if na else (plan.bids[0][0] if plan.bids else 0)
        return (max(7, len(fmt_fixed(hi, self.digits, pd))),
                max(6, len(fmt_fixed(plan.top(n), self.qdigits, qd))))

    def _row(self, level: tuple[int, int], cum: int, top: int, width: int, side: str, best: bool,
             pd: int, qd: int) -> Strip:
        price = fmt_fixed(level[0], self.digits, pd)
        size = fmt_fixed(level[1], self.qdigits, qd)
        style = self.style_of(f"ladder--{side}")
        if self.stale_s is not None:       # frozen figures: greyed
            style = self.style_of("ladder--dim")
        elif best:
            style = style + self.style_of("ladder--best")
        bar_style = self._bar_style(side)
        pw, qw = self._widths(pd, qd)
        text = f" {price:>{pw}} {size:>{qw}} "
        if width - len(text) - qw - 1 >= 6:     # room for the cumulative size and a bar
            text += f"{fmt_fixed(cum, self.qdigits, qd):>{qw}} "
        bar_w = max(0, width - len(text))
        filled = int(round(bar_w * cum / top)) if top else 0
        return Strip([Segment(text[:width], style), Segment(BAR * min(filled, bar_w), bar_style),
                      Segment(" " * max(0, bar_w - filled))]).crop(0, width)


def _drawn(v: BookView) -> tuple[object, ...]:
    """What a ladder draws of a book view."""
    return (v.valid, v.crossed, v.update_id, v.exchange, v.symbol, v.obi, v.bids, v.asks)


def _cumulative(qs: list[int]) -> list[int]:
    out, acc = [], 0
    for q in qs:
        acc += q
        out.append(acc)
    return out

