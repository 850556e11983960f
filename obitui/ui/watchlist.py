"""The watchlist: one row per book market (venue and symbol), sortable, filterable; Enter opens
the market view of its symbol. Invalid, stale and empty books float to the top.

Attached to remote fleets, a ``host`` column comes first (this machine's rows: ``local``), and
the rows follow the layout as hosts and books come (``layout_changed``).

A tick reads the books of the rows on screen (a book whose slot did not change is not read
again, see BookCache) and hands the table only those rows; once a second every book is read
again, ``SLOW_CHUNK`` rows a tick, and the rows are ordered again when the last chunk is in;
after a sort or filter change, or a row turning bad or good, all at once."""
from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, Header, Input, Static

from obitui.ui.base import Frame, ObituiScreen
from obitui.ui.model import Book, Row, fill_row
from obitui.widgets.watchtable import Column, WatchTable

COLUMNS = [
    Column("market", "market", 11, 0, right=False), Column("state", "state", 7, 0, right=False),
    Column("mid", "mid", 8, 1), Column("spread", "spr bps", 7, 2), Column("obi", "OBI", 6, 2),
    Column("spark", "OBI trend", 10, 6, right=False), Column("flow", "flow 1s", 7, 3),
    Column("trades", "tr/s", 4, 4), Column("last", "last", 9, 1), Column("chg", "24h", 7, 4),
    Column("age", "age", 5, 5),
]
HOST_COLUMN = Column("host", "host", 4, 3, right=False)    # attached to remote fleets: first
SLOW_CHUNK = 50          # rows read per tick by the once-a-second pass over every row
SORTS = ["", "market", "state", "mid", "spread", "obi", "flow", "trades", "last", "chg", "age"]
SORT_NAMES = {"": "rank", "market": "market", "state": "state", "mid": "mid", "spread": "spread",
              "obi": "OBI", "flow": "flow", "trades": "trades", "last": "last", "chg": "24h change",
              "age": "age"}


class WatchlistScreen(ObituiScreen):
    DEFAULT_CSS = """
    WatchlistScreen #wl-status { height: 1; background: $panel; color: $text-muted; padding: 0 1; }
    WatchlistScreen #filter { dock: bottom; height: 3; display: none; border: round $accent; }
    WatchlistScreen #filter.-shown { display: block; }
    """
    BINDINGS = [
        Binding("slash", "filter", "Filter", key_display="/", id="watch.filter"),
        Binding("o", "sort_next", "Sort", id="watch.sort"),
        Binding("enter", "open", "Open", key_display="⏎", id="watch.open"),
        Binding("O", "sort_reverse", "Reverse the order", key_display="O", show=False, id="watch.reverse"),
        Binding("escape", "clear_filter", "Clear the filter", key_display="Esc", show=False, id="watch.clear"),
        *[Binding(str(n % 10), f"sort_by({n})", f"Sort by {SORT_NAMES[SORTS[n]]}", show=False)
          for n in range(1, len(SORTS))],
    ]

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.rows: dict[str, Row] = {}
        self.sort = ""
        self.backlog: list[str] = []      # rows the once-a-second pass has still to read
        self.desc = False
        self.filter = ""
        self.dirty = True
        self.shown_keys: list[str] = []

    def compose(self) -> ComposeResult:
        yield Header(show_clock=self.oapp.clock)
        yield Static(id="wl-status")
        yield WatchTable([HOST_COLUMN, *COLUMNS] if self.oapp.attached else COLUMNS, id="watch")
        yield Input(placeholder="filter markets (text in venue or symbol); Enter keeps it, Esc clears it",
                    id="filter")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.rows = {b.key: Row(b) for b in self.oapp.books}
        self.query_one("#watch", WatchTable).focus()

    @property
    def table(self) -> WatchTable:
        return self.query_one("#watch", WatchTable)

    # ------------------------------------------------------------ data
    def _ordered(self) -> list[str]:
        f = self.filter
        rows = [r for r in self.rows.values()
                if not f or f in r.book.key.lower() or f in r.book.short.lower()]
        bad = [r for r in rows if r.bad]
        good = [r for r in rows if not r.bad]
        if self.sort:
            good.sort(key=lambda r: r.sort.get(self.sort, 0), reverse=self.desc)  # type: ignore[arg-type,return-value]
        elif self.desc:
            good.reverse()
        return [r.book.key for r in bad + good]

    def _fill(self, frame: Frame, book: Book) -> None:
        fill_row(self.rows[book.key], self.read(frame, book), frame.now_ns, frame.stale_for(book),
                 frame.feed_state(book))

    def layout_changed(self) -> None:
        """Rows for the books that came (those already shown keep their state)."""
        old = self.rows
        self.rows = {}
        for b in self.oapp.books:
            row = self.rows[b.key] = old.get(b.key) or Row(b)
            row.book = b                            # its feed or its scale may have changed
        self.backlog = []
        self.dirty = True

    def update_data(self, frame: Frame) -> None:
        table = self.table
        if self.dirty or not self.shown_keys:
            # a sort, a filter, a row gone bad or good, the first frame: every row now
            self.dirty = False
            self.backlog = []
            for r in self.rows.values():
                self._fill(frame, r.book)
            self._reorder()
            return
        if frame.slow and not self.backlog:
            # the once-a-second pass over every row, a chunk a tick: a key pressed meanwhile
            # waits for one chunk, never for all 300 rows
            self.backlog = list(self.rows)
        cells = {}
        for i in table.visible():
            key = table.keys[i]
            r = self.rows[key]
            was_bad = r.bad
            self._fill(frame, r.book)
            if r.bad != was_bad:
                self.dirty = True          # order again next tick: it floats up (or back)
            cells[key] = r.cells
        table.set_rows(table.keys, cells)
        if self.backlog:
            chunk, self.backlog = self.backlog[:SLOW_CHUNK], self.backlog[SLOW_CHUNK:]
            for key in chunk:
                self._fill(frame, self.rows[key].book)
            if not self.backlog:
                self._reorder()

    def _reorder(self) -> None:
        self.shown_keys = self._ordered()
        self.table.set_rows(self.shown_keys, {k: self.rows[k].cells for k in self.shown_keys})
        self._status()

    def _status(self) -> None:
        n_bad = sum(r.bad for r in self.rows.values())
        n_mk = len(self.oapp.markets)
        parts = []
        if self.oapp.attached:
            hosts = list(dict.fromkeys(h for h in self.oapp.layout.hosts if h is not None))
            stale = sorted({r.book.host for r in self.rows.values()
                            if r.book.host and r.cells.get("state", ("",))[0] == "stale"})
            parts.append(f"{len(hosts)} remote host{'s' * (len(hosts) != 1)}" if hosts
                         else "waiting for a remote fleet")
            if stale:
                parts.append(f"stale: {', '.join(stale)}")
        parts += [f"{n_mk} market{'s' * (n_mk != 1)}", f"{len(self.rows)} books",
                 f"{n_bad} not synced" if n_bad else "all synced",
                 f"sort {SORT_NAMES[self.sort]} {'↓' if self.desc else '↑'}"]
        if self.filter:
            parts.append(f"filter \"{self.filter}\": {len(self.shown_keys)} shown")
        self.query_one("#wl-status", Static).update(" · ".join(parts))

    def target(self) -> tuple[int, str | None] | None:
        key = self.table.cursor_key
        if key is None:
            return None
        b = self.rows[key].book
        return b.feed, b.market_key

    # ------------------------------------------------------------ keys
    def _resort(self) -> None:
        self.table.sort_by(self.sort, self.desc)
        self.dirty = True
        self.oapp.tick()

    def action_sort_by(self, n: int) -> None:
        col = SORTS[n]
        if col == self.sort:
            self.desc = not self.desc
        else:
            self.sort, self.desc = col, col not in ("market", "state", "spread", "age")
        self._resort()

    def action_sort_next(self) -> None:
        n = (SORTS.index(self.sort) + 1) % len(SORTS)
        if n == 0:
            self.sort, self.desc = "", False
            self._resort()
        else:
            self.action_sort_by(n)

    def action_sort_reverse(self) -> None:
        self.desc = not self.desc
        self._resort()

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.add_class("-shown")
        box.focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        if self.filter or box.has_class("-shown"):
            box.value = ""
            self.filter = ""
            box.remove_class("-shown")
            self.table.focus()
            self.dirty = True
            self.oapp.tick()
        else:
            self.oapp.action_back()

    def on_input_changed(self, event: Input.Changed) -> None:
        self.filter = event.value.strip().lower()
        self.dirty = True
        self.oapp.tick()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if not self.filter:
            self.query_one("#filter", Input).remove_class("-shown")
        self.table.focus()

    def on_key(self, event: Any) -> None:
        if event.key == "escape" and self.focused is self.query_one("#filter", Input):
            event.stop()
            self.action_clear_filter()

    def action_open(self) -> None:
        self.table.action_select()

    def on_watch_table_selected(self, event: WatchTable.Selected) -> None:
        self.oapp.open_market(event.key)

    def on_watch_table_cursor_moved(self, event: WatchTable.CursorMoved) -> None:
        if event.scrolled:
            self.oapp.tick()           # the rows that came on screen: their figures now
