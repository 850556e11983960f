"""The market view of one symbol: every venue's ladder over the full height (cumulative size,
size bars), the trade tape of both venues, the venues' tickers (last, 24 h change, high, low,
volume) and the cross-venue line (mid difference in bps, CROSSED, its sparkline). A remote
fleet's market (an attached console) is that host's: its venues, its feeds."""
from __future__ import annotations

from collections import deque
from statistics import median
from typing import Any

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.color import Color
from textual.containers import Horizontal
from textual.widgets import Footer, Header

from obitui.core.stats import BookView, FeedState
from obitui.ui.base import Frame, ObituiScreen
from obitui.ui.model import DOWN, UP, Book, Market, change_pct, human, price_text, spark
from obitui.widgets.feeds import OpLog
from obitui.widgets.format import feed_name, fmt_fixed
from obitui.widgets.ladder import DepthLadder
from obitui.widgets.lines import CrossVenueLine, FeedsLine, TickerLine
from obitui.widgets.sparkline import ObiSparkline
from obitui.widgets.tape import TapeLine, TradeTape

STATE_WORD = {FeedState.CONNECTED_SYNCED: "ok", FeedState.CONNECTED: "ok", FeedState.LIVE: "ok",
              FeedState.BACKOFF: "bad", FeedState.FAILED: "bad", FeedState.STOPPED: "dim"}
LADDERS = 2             # ladders on screen: the market's first two venues (b cycles the focus)
TAPE_KEEP = 200
BIG = 3.0               # a trade this many times the median size of the recent ones is big
DIFF_KEEP = 240


class MarketScreen(ObituiScreen):
    DEFAULT_CSS = """
    MarketScreen #mv-body { height: 1fr; }
    MarketScreen #mv-books { width: 1fr; }
    MarketScreen .book { width: 1fr; border: round $panel-lighten-2; padding: 0; }
    MarketScreen #tape { width: 38; border: round $panel-lighten-2; }
    MarketScreen #ticker { padding: 0 1; }
    MarketScreen #cross { padding: 0 1; background: $panel; }
    MarketScreen .sparks { height: 2; }
    MarketScreen ObiSparkline { width: 1fr; }
    MarketScreen #log { height: 5; }
    MarketScreen.-narrow #tape { width: 32; }
    MarketScreen.-short #log { display: none; }
    MarketScreen.-short .sparks { display: none; }
    """
    BINDINGS = [
        Binding("escape", "app.back", "Back", key_display="Esc", id="market.back"),
        Binding("b", "app.cycle_book", "Next book", id="market.cycle_book"),
        Binding("right_square_bracket", "step(1)", "Next market", key_display="]", show=False, id="market.next"),
        Binding("left_square_bracket", "step(-1)", "Prev market", key_display="[", show=False,
                id="market.prev"),
    ]

    def __init__(self, market: int, focus_key: str | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.market_index = market
        self.focus_key = focus_key
        self.outdated = False       # the layout changed while another screen was on top
        self._reset()

    def _reset(self) -> None:
        self.stale = False
        self.focused_book = 0
        self.tape: deque[tuple[int, int, int, int, int]] = deque(maxlen=TAPE_KEEP)   # + book index
        self.seen: list[set[tuple[int, int, int, int]]] = [set() for _ in range(LADDERS)]
        self.sizes: list[deque[int]] = [deque(maxlen=100) for _ in range(LADDERS)]
        self.diffs: deque[float] = deque(maxlen=DIFF_KEEP)
        self.last_px: list[int] = [0] * LADDERS
        self.ticks: list[str] = [""] * LADDERS

    @property
    def market(self) -> Market:
        return self.oapp.markets[self.market_index]

    @property
    def shown(self) -> list[Book]:
        return list(self.market.books[:LADDERS])

    def compose(self) -> ComposeResult:
        yield Header(show_clock=self.oapp.clock)
        yield TickerLine(id="ticker")
        yield FeedsLine(id="feedline")
        with Horizontal(id="mv-body"):
            with Horizontal(id="mv-books"):
                for i, b in enumerate(self.shown):
                    yield DepthLadder(b.key, b.digits, b.qdigits, id=f"ladder{i}", classes="book")
            yield TradeTape(id="tape")
        yield CrossVenueLine(id="cross")
        with Horizontal(classes="sparks"):
            for i, b in enumerate(self.shown):
                yield ObiSparkline(b.key, id=f"spark{i}")
        yield OpLog(id="log")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#tape", TradeTape).border_title = "trades"
        self.query_one("#log", OpLog).border_title = "log"
        self.oapp.fill_log(self.query_one("#log", OpLog))
        if self.focus_key is not None:
            keys = [b.key for b in self.shown]
            if self.focus_key in keys:
                self.focused_book = keys.index(self.focus_key)
        self._show_focus()
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self._show_focus())
        self._titles()

    def _titles(self) -> None:
        self.sub_title = self.market.title
        for i, b in enumerate(self.shown):
            self.query_one(f"#ladder{i}", DepthLadder).border_title = b.short

    def _focus(self, i: int) -> None:
        self.focused_book = i
        self._show_focus()

    def _show_focus(self, width: int | None = None) -> None:
        """The focused ladder's border in the accent colour; narrower than the app's ``-wide``
        breakpoint only the focused ladder and its sparkline are shown. Inline styles, not a
        CSS class: a class makes Textual match every rule of the app against the widgets again
        (~2.4 ms a key at 120x40, against ~0.3 ms; `obitui bench ui`, issue #20)."""
        width = self.app.size.width if width is None else width
        wide = next(w for w, name in self.app.HORIZONTAL_BREAKPOINTS or [] if name == "-wide")
        colours = self.app.theme_variables
        on, off = Color.parse(colours["accent"]), Color.parse(colours["panel-lighten-2"])
        for j in range(len(self.shown)):
            focused = j == self.focused_book
            lad = self.query_one(f"#ladder{j}", DepthLadder)
            lad.styles.border = ("round", on if focused else off)
            shown = focused or width >= wide
            for w in (lad, self.query_one(f"#spark{j}", ObiSparkline)):
                if w.display != shown:
                    w.display = shown

    def on_resize(self, event: events.Resize) -> None:
        self._show_focus(event.size.width)

    # ------------------------------------------------------------ keys
    def target(self) -> tuple[int, str | None] | None:
        if not self.shown:
            return None
        b = self.shown[self.focused_book]
        return b.feed, b.market_key

    def cycle_book(self) -> None:
        if self.shown:
            self._focus((self.focused_book + 1) % len(self.shown))

    def action_step(self, n: int) -> None:
        """The next (previous) market in the config's order, in this screen."""
        markets = self.oapp.markets
        self.market_index = (self.market_index + n) % len(markets)
        self._reset()
        old = len(self.query(DepthLadder))
        if old != len(self.shown):
            self.oapp.switch_market(self)      # another number of venues: a new screen
            return
        for i, b in enumerate(self.shown):
            lad = self.query_one(f"#ladder{i}", DepthLadder)
            lad.key, lad.digits, lad.qdigits = b.key, b.digits, b.qdigits
            lad.show(None)
            sp = self.query_one(f"#spark{i}", ObiSparkline)
            sp.key = b.key
            sp.show([], 0.0, False)
        self._focus(0)
        self._titles()
        self.oapp.tick()

    def layout_changed(self) -> None:
        """An attached console's layout changed: the ladders take their books' new figures
        (a finer scale); a market that gained a venue is drawn again (a new screen)."""
        if not self.is_mounted or self.market_index >= len(self.oapp.markets):
            return
        ladders = list(self.query(DepthLadder))
        if len(ladders) != len(self.shown):
            if self.oapp.screen is self:
                self.oapp.switch_market(self)
            else:
                self.outdated = True
            return
        for lad, b in zip(ladders, self.shown):
            lad.key, lad.digits, lad.qdigits = b.key, b.digits, b.qdigits

    def on_screen_resume(self, event: Any) -> None:
        if self.outdated:
            self.outdated = False
            self.oapp.switch_market(self)
            return
        super().on_screen_resume(event)

    # ------------------------------------------------------------ data
    def update_data(self, frame: Frame) -> None:
        views = [self.read(frame, b) for b in self.shown]
        stale = [frame.stale_for(b) for b in self.shown]
        for i, (b, v) in enumerate(zip(self.shown, views)):
            self.query_one(f"#ladder{i}", DepthLadder).show(v, frame.feed_state(b), stale[i])
            if v is not None:
                self.query_one(f"#spark{i}", ObiSparkline).show(v.obi_history, v.obi, v.valid)
                self._take_trades(i, v)
        self.query_one("#tape", TradeTape).show(self._tape_lines())
        self.query_one("#ticker", TickerLine).show(self._ticker_rows(views))
        self.stale = any(x is not None for x in stale)
        self.query_one("#cross", CrossVenueLine).show([self._cross(views)])
        self.query_one("#feedline", FeedsLine).show([self._feeds(frame)])

    def _feeds(self, frame: Frame) -> list[tuple[str, str]]:
        """The state of every feed that serves this symbol."""
        parts: list[tuple[str, str]] = [("feeds ", "label")]
        sym = self.market.symbol
        host = self.market.host
        hosts = self.oapp.layout.hosts
        for i, (f, fv) in enumerate(zip(self.oapp.cfg.feeds, frame.feeds)):
            if sym not in f.symbols or fv is None or (hosts[i] if i < len(hosts) else None) != host:
                continue
            stale = frame.feed_stale[i] if i < len(frame.feed_stale) else None
            word = (fv.state.word, STATE_WORD.get(fv.state, "")) if stale is None else ("stale", "bad")
            parts += [(f" {f.label if host is None else feed_name(f.label)} ", "label"), word, (" ", "")]
        return parts

    def _take_trades(self, i: int, v: BookView) -> None:
        new = [t for t in v.tape if t not in self.seen[i]]
        if not new:
            return
        for t in reversed(new):                       # oldest first: the deque ends newest
            self.tape.append((*t, i))
            self.sizes[i].append(t[2])
        self.seen[i] = set(v.tape)
        if v.last_trade_side and v.last_trade_price != self.last_px[i]:
            if self.last_px[i]:
                self.ticks[i] = UP if v.last_trade_price > self.last_px[i] else DOWN
            self.last_px[i] = v.last_trade_price

    def _tape_lines(self) -> list[TapeLine]:
        out = []
        meds = [median(s) if len(s) >= 5 else 0 for s in self.sizes]
        for ts, price, qty, side, i in sorted(self.tape, key=lambda t: t[0], reverse=True)[:60]:
            b = self.shown[i]
            dec_p = decimals_of(price, b.digits)
            dec_q = decimals_of(qty, b.qdigits)
            out.append(TapeLine(ts, b.fc.venue_info.label_prefix, side == 1,
                                fmt_fixed(price, b.digits, dec_p), fmt_fixed(qty, b.qdigits, dec_q),
                                bool(meds[i]) and qty >= BIG * meds[i]))
        return out

    def _ticker_rows(self, views: list[BookView | None]) -> list[list[Any]]:
        rows = []
        for i, (b, v) in enumerate(zip(self.shown, views)):
            if v is None or not v.exchange:
                continue
            row: list[Any] = [(f"{b.short:<12}", "label")]
            if v.ticker_ns:
                row += [[(" last ", "label"), (price_text(v.ticker_last, v, b.digits), "value")]]
            elif v.last_trade_side:
                row += [[(" last trade ", "label"), (price_text(v.last_trade_price, v, b.digits), "value")]]
            else:
                row += [(" no trades yet", "dim")]
            if self.ticks[i]:
                row += [(self.ticks[i], "pos" if self.ticks[i] == UP else "neg")]
            chg = change_pct(v)
            if chg is not None:
                row += [(f"  24h {chg:+.2f}%", "pos" if chg >= 0 else "neg")]
            if v.day_ns:
                row += [[("  high ", "label"), (price_text(v.day_high, v, b.digits), "")],
                        [("  low ", "label"), (price_text(v.day_low, v, b.digits), "")],
                        [("  vol ", "label"), (human(v.day_volume / 10 ** b.qdigits), "")]]
            n = v.buy_count_1s + v.sell_count_1s
            flow = v.flow_1s / 10 ** b.qdigits
            row += [[("  flow 1s ", "label"), (human(flow) if flow else "0", "pos" if flow >= 0 else "neg"),
                     (f" ({n} trades)", "dim")]]
            rows.append(row)
        return rows or [[(" no data yet", "dim")]]

    def _cross(self, views: list[BookView | None]) -> list[tuple[str, str]]:
        if len(self.shown) < 2:
            return [(f"{self.market.symbol} on one venue only: no cross-venue figures", "dim")]
        a, b = self.shown[0], self.shown[1]
        va, vb = views[0], views[1]
        head = (f"{a.fc.venue_info.label_prefix}−{b.fc.venue_info.label_prefix} mid ", "label")
        if va is None or vb is None or not (va.bids and va.asks and vb.bids and vb.asks):
            return [head, ("n/a (a book has no two sides)", "dim")]
        if not (va.valid and vb.valid) or frame_stale(self):
            return [head, ("n/a (a book is not synced)", "dim")]
        sa, sb = 10 ** a.digits, 10 ** b.digits
        mid_a = (va.bids[0][0] + va.asks[0][0]) / 2 / sa
        mid_b = (vb.bids[0][0] + vb.asks[0][0]) / 2 / sb
        diff = (mid_a - mid_b) / mid_b * 1e4 if mid_b else 0.0
        self.diffs.append(diff)
        crossed = va.bids[0][0] / sa > vb.asks[0][0] / sb or vb.bids[0][0] / sb > va.asks[0][0] / sa
        top = max((abs(x) for x in self.diffs), default=0.0) or 1.0
        parts = [head, (f"{diff:+.2f} bps", "pos" if diff >= 0 else "neg")]
        parts.append(("  CROSSED " if crossed else "  not crossed", "alert" if crossed else "dim"))
        parts.append((f"  ±{top:.2f} ", "label"))
        parts.append((spark(list(self.diffs), 60, -top, top), "value"))
        return parts


def frame_stale(screen: MarketScreen) -> bool:
    return screen.stale


def decimals_of(value: int, digits: int) -> int:
    from obitui.widgets.format import decimals_needed
    return decimals_needed(value, digits)
