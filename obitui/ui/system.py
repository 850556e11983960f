"""Feeds & system: the feeds table with its row cursor (`r`/`s` act on the highlighted feed)
and the highlighted feed's whole reason, the rings (fill, high-water mark, drops), every process
of the fleet (the simulator and this UI included) and the log. Attached to remote fleets: their
feeds too, with their host, their rings as their hosts report them."""
from __future__ import annotations

from typing import Any

from rich.markup import escape
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import DataTable, Footer, Header

from obitui.controller import fleet_pids
from obitui.ui.base import Frame, ObituiScreen
from obitui.widgets.feeds import FeedDetail, FeedsTable, OpLog, ProcsPanel, RingsPanel


class SystemScreen(ObituiScreen):
    DEFAULT_CSS = """
    SystemScreen #sys-bottom { height: 9; }
    SystemScreen #log { height: 7; }
    SystemScreen.-short #log { display: none; }
    SystemScreen.-short #sys-bottom { height: 7; }
    """
    BINDINGS = [Binding("escape,f", "app.back", "Back", key_display="Esc", id="system.back")]

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.compact: bool | None = None
        self.built_for = 0

    def compose(self) -> ComposeResult:
        yield Header(show_clock=self.oapp.clock)
        app = self.oapp
        yield FeedsTable(app.cfg, app.layout.hosts if app.attached else None, id="feeds")
        yield FeedDetail(id="detail")
        with Horizontal(id="sys-bottom"):
            yield RingsPanel(id="rings")
            yield ProcsPanel(id="procs")
        yield OpLog(id="log")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.sub_title = "feeds & system"
        table = self.query_one("#feeds", FeedsTable)
        table.border_title = "feeds"
        self.query_one("#rings").border_title = "rings"
        self.query_one("#procs").border_title = "processes"
        self.query_one("#log").border_title = "log"
        self._build()
        self.oapp.fill_log(self.query_one("#log", OpLog))
        table.focus()

    def _build(self) -> None:
        width = self.size.width or self.app.size.width
        self.compact = width < 110
        if width != self.built_for:
            self.built_for = width
            self.query_one("#feeds", FeedsTable).build(width)

    def on_resize(self, _event: Any) -> None:
        self._build()

    def layout_changed(self) -> None:
        """Rows for the feeds that came (an attached console)."""
        if not self.is_mounted:
            return                          # composed with the app's layout when it mounts
        table = self.table
        table.cfg = self.oapp.cfg
        table.hosts = self.oapp.layout.hosts if self.oapp.attached else None
        self.built_for = 0
        self._build()
        self.oapp.last_table = 0.0          # their figures at the next tick

    @property
    def table(self) -> FeedsTable:
        return self.query_one("#feeds", FeedsTable)

    def target(self) -> tuple[int, str | None] | None:
        return self.table.selected, None

    def update_data(self, frame: Frame) -> None:
        app = self.oapp
        if frame.table:
            self.table.update(frame.feeds, app.controller.ring_fill(), frame.now_ns, frame.feed_stale)
            self._detail()
        if frame.slow:
            self.query_one("#rings", RingsPanel).show(app.cfg, app.controller.ring_fill(),
                                                      app.controller.ring_high_water(), bool(self.compact))
            pids = fleet_pids(app.controller)
            samples = app.sampler.sample(pids, "ui") if pids or app.attached else []
            self.query_one("#procs", ProcsPanel).show(samples, bool(self.compact))

    def _detail(self) -> None:
        i = self.table.selected
        if i >= len(self.oapp.cfg.feeds):
            self.query_one("#detail", FeedDetail).update("no feeds yet")
            return
        f = self.oapp.cfg.feeds[i]
        reason = self.table.reasons.get(f.label, "")
        self.query_one("#detail", FeedDetail).update(escape(f"{f.label}: {reason or 'no reason given'}"))

    def on_data_table_row_highlighted(self, _event: DataTable.RowHighlighted) -> None:
        self._detail()
