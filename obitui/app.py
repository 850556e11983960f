"""The Textual console. It reads only the stats block (and ring counters for fill levels),
at its own pace: one timer, all widget updates inside ``batch_update()``."""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, Protocol

import psutil
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.driver import Driver
from textual.screen import ModalScreen
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Header, RichLog, Static

from obitui.config import Config, FeedConfig, feed_book_ids
from obitui.core.stats import (
    AckResult, BookView, Command, FeedState, FeedView, StatsBlock, heartbeat_age, hist_quantile, is_stale,
)
from obitui.widgets.ladder import DepthLadder
from obitui.widgets.sparkline import ObiSparkline

REFRESH_STEPS = (2.0, 4.0, 8.0, 10.0, 16.0)
ACK_TIMEOUT = 5.0
TABLE_EVERY = 0.5       # the feed table is a slow table (DataTable): 2 Hz
DEFER_LIMIT_S = 5.0     # a signal during start-up waits for the fleet to be up, at most this long
LADDERS = 2             # depth ladders on screen, whatever the number of markets
RESYNC_ALL_WITHIN = 2.0  # `s` again on the same feed this soon: resync all its books


@dataclass(frozen=True)
class Market:
    """A market a book feed serves: its book slot, key and that feed (index and config)."""
    slot: int
    key: str
    feed: int
    fc: FeedConfig


def book_markets(cfg: Config) -> list[Market]:
    """Every market a book feed serves, in book slot order."""
    seen: dict[str, Market] = {}
    for i, (f, ids) in enumerate(zip(cfg.feeds, feed_book_ids(cfg.feeds))):
        if f.is_book:
            for key, j in zip(f.book_keys, ids):
                seen.setdefault(key, Market(j, key, i, f))
    return sorted(seen.values(), key=lambda m: m.slot)


STATE_STYLE = {
    FeedState.CONNECTED_SYNCED: "green", FeedState.CONNECTED: "green", FeedState.LIVE: "green",
    FeedState.SYNCING: "yellow", FeedState.SUBSCRIBING: "yellow", FeedState.CONNECTING: "yellow",
    FeedState.RESYNCING: "yellow", FeedState.BACKOFF: "red", FeedState.FAILED: "bold red",
    FeedState.STOPPED: "dim",
}


class Controller(Protocol):
    stats: StatsBlock | None

    def command(self, label: str, cmd: Command) -> int: ...
    def pids(self) -> dict[str, int]: ...
    def ring_fill(self) -> list[tuple[float, int]]: ...
    def ring_high_water(self) -> list[float]: ...
    def poll(self) -> list[str]: ...
    def stop(self) -> None: ...


@dataclass
class Pending:
    label: str
    index: int
    seq: int
    what: str
    sent: float


class TerminalFile:
    """The terminal as Textual's output thread writes to it, surviving the terminal's end.

    When the terminal goes away (a dropped SSH session: every write fails with EIO), Textual's
    output thread dies of the error; the next writes fill its bounded queue and the app then
    blocks for ever in its own shutdown, the fleet still running and its segments still in
    /dev/shm. Here a failed write is dropped instead, and ``on_gone`` is called once (the app
    then exits as it does on SIGHUP, whether a SIGHUP comes or not)."""

    def __init__(self, file: IO[str], on_gone: Callable[[], None]) -> None:
        self._file = file
        self._on_gone = on_gone
        self.gone = False

    def write(self, text: str) -> int:
        if not self.gone:
            try:
                return self._file.write(text)
            except OSError:
                self._lost()
        return len(text)

    def flush(self) -> None:
        if not self.gone:
            try:
                self._file.flush()
            except OSError:
                self._lost()

    def _lost(self) -> None:
        self.gone = True
        self._on_gone()

    def __getattr__(self, name: str) -> Any:      # fileno, isatty, encoding, ...
        return getattr(self._file, name)


def _terminal_driver(base: type[Driver]) -> type[Driver]:
    """``base`` (Textual's Linux driver) writing through a :class:`TerminalFile`."""

    class ObituiDriver(base):  # type: ignore[valid-type,misc]
        def __init__(self, app: Any, **kw: Any) -> None:
            super().__init__(app, **kw)
            self._file = TerminalFile(self._file, app.terminal_gone)

    return ObituiDriver


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,f1,question_mark", "dismiss", "Close", id="help.close")]

    def __init__(self, bindings: list[Binding]) -> None:
        super().__init__()
        self.lines = bindings

    def compose(self) -> ComposeResult:
        rows = ["[b]obitui keys[/b]", ""]
        for b in self.lines:
            rows.append(f"  [b]{(b.key_display or b.key):<10}[/b] {b.description}")
        rows += ["", "The display reads the stats block only; pausing it never stops the data.",
                 "Esc closes this help."]
        yield Vertical(Static("\n".join(rows)))


def _us(ns: float | None) -> str:
    if ns is None:
        return "-"
    return f"{ns / 1e3:.0f}" if ns < 1e7 else f"{ns / 1e6:.0f}ms"


def _age(now_ns: int, then_ns: int) -> str:
    if not then_ns:
        return "-"
    s = max(0.0, (now_ns - then_ns) / 1e9)
    return f"{s:.1f}s" if s < 100 else f"{s / 60:.0f}m"


class ObituiApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "obitui"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (32, "-tall")]
    BINDINGS = [
        Binding("r", "reconnect", "Reconnect", id="feed.reconnect"),
        Binding("s", "resync", "Resync", id="feed.resync"),
        Binding("a", "reconnect_all", "Reconnect all", id="feed.reconnect_all"),
        Binding("p", "pause", "Pause", id="display.pause"),
        Binding("b", "cycle_book", "Next book", id="display.cycle_book"),
        Binding("plus,equals_sign", "faster", "Faster", key_display="+", id="display.faster"),
        Binding("minus", "slower", "Slower", key_display="-", id="display.slower"),
        Binding("f1,question_mark", "help", "Help", key_display="F1", id="app.help"),
        Binding("q", "quit", "Quit", id="app.quit"),
    ]

    def __init__(self, cfg: Config, controller: Controller, refresh_hz: float = 8.0,
                 mouse: bool = True, clock: bool = True) -> None:
        """``clock``: a wall clock in the header and times in the log (off for snapshots)."""
        super().__init__()
        self.clock = clock
        self.cfg = cfg
        self.controller = controller
        self.refresh_hz = refresh_hz
        self.mouse_enabled = mouse
        self.markets = book_markets(cfg)
        self.book_keys = [m.key for m in self.markets]
        # the ladders (and sparklines) show LADDERS markets: the first ones, until `b` moves on
        self.shown = list(range(min(LADDERS, len(self.markets))))    # index in markets, per ladder
        self.focused_book = 0         # the focused ladder
        self.resync_at: dict[str, float] = {}     # label -> when `s` last sent RESYNC_INVALID
        self.paused = False
        self.timer: Timer | None = None
        self.pending: list[Pending] = []
        self.last_states: dict[str, tuple[FeedState, str]] = {}
        self.frames_prev: dict[str, tuple[int, float]] = {}
        self.rates: dict[str, float] = {}
        self.procs: dict[int, psutil.Process] = {}
        self.ticks = 0
        self.ready = False      # widgets composed and the table built
        self.exit_on_ready = False   # a signal (or the terminal's end) came before it ran
        self.ui_loop: asyncio.AbstractEventLoop | None = None
        self.last_slow = 0.0
        self.last_table = 0.0
        self.last_poll = 0.0

    def get_driver_class(self) -> type[Driver]:
        driver = super().get_driver_class()
        if driver.__name__ == "LinuxDriver":       # a real terminal (tests run headless)
            return _terminal_driver(driver)
        return driver

    def terminal_gone(self) -> None:
        """The terminal cannot be written to any more (called once, from Textual's output
        thread): exit, as on SIGHUP; run_app then stops the fleet."""
        logging.getLogger("obitui.ui").warning("the terminal is gone: stopping")
        loop = self.ui_loop or getattr(self, "_loop", None)
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.exit)
        else:
            self.exit_on_ready = True

    @property
    def main(self) -> Any:
        """The main screen (widgets are queried there even while the help screen is up)."""
        return self.screen_stack[0]

    # ------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        yield Header(show_clock=self.clock)
        with Horizontal(id="books"):
            for i, k in enumerate(self.shown):
                m = self.markets[k]
                yield DepthLadder(m.key, *m.fc.scales_of(m.key.split(":", 1)[1]), id=f"ladder{i}",
                                  classes="book" + (" focused" if i == 0 else ""))
        with Horizontal(classes="sparks"):
            for i, k in enumerate(self.shown):
                yield ObiSparkline(self.markets[k].key, id=f"spark{i}", classes="focused" if i == 0 else "")
        table: DataTable[Any] = DataTable(id="feeds", cursor_type="row", zebra_stripes=True)
        yield table
        with Horizontal(id="bottom"):
            yield Static(id="rings")
            yield Static(id="procs")
        yield RichLog(id="log", max_lines=500, markup=True, wrap=False)
        yield Footer()

    def on_mount(self) -> None:
        self.ui_loop = asyncio.get_running_loop()
        self.compact = self.size.width < 110
        self._build_table()
        self.main.query_one("#rings", Static).border_title = "rings"
        self.main.query_one("#procs", Static).border_title = "processes"
        self.main.query_one("#log", RichLog).border_title = "log"
        self.main.query_one("#feeds", DataTable).border_title = "feeds"

    def on_ready(self) -> None:
        # every widget is mounted now (under load on_mount can come before the screen's children)
        self.ready = True
        if self.exit_on_ready:
            self.exit()
            return
        self._start_timer()
        self.tick()

    FULL_COLUMNS = (("feed", "label", 5), ("state", "state", 16), ("reason", "reason", 15),
                    ("age", "age", 5), ("msg/s", "rate", 5), ("ex→rx µs", "lat1", 11),
                    ("rx→ring", "lat2", 9), ("gaps", "gaps", 4), ("resync", "resyncs", 6),
                    ("reconn", "reconnects", 6), ("drops", "drops", 5), ("retry", "retry", 5))
    COMPACT_KEYS = ("label", "state", "age", "rate", "gaps", "resyncs", "reconnects", "drops", "retry")

    def _build_table(self) -> None:
        """All columns when wide; at 80 columns the ones that fit without scrolling."""
        table = self.main.query_one("#feeds", DataTable)
        cursor = table.cursor_row
        table.clear(columns=True)
        for col, key, width in self.FULL_COLUMNS:
            if not self.compact or key in self.COMPACT_KEYS:
                table.add_column(col, key=key, width=width)
        for f in self.cfg.feeds:
            table.add_row(*([f.label] + [""] * (len(table.columns) - 1)), key=f.label)
        table.move_cursor(row=max(0, cursor))

    def on_resize(self, event: Any) -> None:
        compact = event.size.width < 110
        if compact != getattr(self, "compact", compact) and self.ready:
            self.compact = compact
            self._build_table()
            self.tick()

    def _start_timer(self) -> None:
        if self.timer is not None:
            self.timer.stop()
        self.timer = self.set_interval(1.0 / self.refresh_hz, self.tick)

    # ------------------------------------------------------------ the one timer
    def tick(self) -> None:
        # is_running turns False as Textual's shutdown begins, before it removes the widgets and
        # long before the app's Unmount: a tick queued in between must not look for them
        if not self.ready or not self.is_running:
            return
        try:
            self._tick()
        except NoMatches:
            # the app is being torn down (quit) while a tick was queued: nothing left to draw
            if not (self._exit or not self.main.is_attached):
                raise

    def on_unmount(self) -> None:
        self.ready = False
        if self.timer is not None:
            self.timer.stop()

    def _tick(self) -> None:
        self.ticks += 1
        if time.monotonic() - self.last_poll >= TABLE_EVERY:   # child watch: 2 Hz is plenty
            self.last_poll = time.monotonic()
            for event in self.controller.poll():
                self.log_line(f"[yellow]{event}[/]")
        stats = self.controller.stats
        if stats is None:
            return
        self._check_acks(stats)
        feeds = [stats.read_feed(i) for i in range(len(self.cfg.feeds))]
        self._note_state_changes(feeds)
        if self.paused:
            return
        books = [stats.read_book(self.markets[k].slot) for k in self.shown]   # only the books shown
        now = time.monotonic()
        with self.batch_update():
            self._update_books(books, feeds)      # hot widgets: every tick
            if now - self.last_table >= TABLE_EVERY:
                self.last_table = now
                self._update_table(feeds)
            if now - self.last_slow >= 1.0:      # rings and processes: once a second
                self.last_slow = now
                self._update_rings(feeds)
                self._update_procs()

    def _update_books(self, books: list[BookView | None], feeds: list[FeedView | None]) -> None:
        stats = self.controller.stats
        ev = stats.read_engine() if stats is not None else None
        age = heartbeat_age(ev.heartbeat_ns) if ev is not None else None
        stale_s = age if is_stale(age) else None      # the engine publishes the books
        for j, (k, view) in enumerate(zip(self.shown, books)):
            fv = feeds[self.markets[k].feed] if self.markets[k].feed < len(feeds) else None
            state = fv.state.word if fv is not None else ""
            self.main.query_one(f"#ladder{j}", DepthLadder).show(view, state, stale_s)
            if view is not None:
                self.main.query_one(f"#spark{j}", ObiSparkline).show(view.obi_history, view.obi, view.valid)

    def _update_table(self, feeds: list[FeedView | None]) -> None:
        table = self.main.query_one("#feeds", DataTable)
        now_ns = time.time_ns()
        now = time.monotonic()
        fills = self.controller.ring_fill()
        for i, (f, fv) in enumerate(zip(self.cfg.feeds, feeds)):
            if fv is None:
                continue
            c = fv.counters
            prev = self.frames_prev.get(f.label)
            if prev is None or now - prev[1] >= 1.0:
                if prev is not None:
                    self.rates[f.label] = (c["frames"] - prev[0]) / (now - prev[1])
                self.frames_prev[f.label] = (c["frames"], now)
            retry = ""
            if fv.state == FeedState.BACKOFF and fv.next_retry_ns:
                retry = f"{max(0.0, (fv.next_retry_ns - now_ns) / 1e9):.1f}s"
            drops = fills[i][1] if i < len(fills) else c["ring_drops"]
            row = {
                "state": f"[{STATE_STYLE.get(fv.state, '')}]{fv.state.word}[/]",
                "reason": fv.reason[:15], "age": _age(now_ns, fv.last_receive_ns),
                "rate": f"{self.rates.get(f.label, 0.0):.0f}",
                "lat1": f"{_us(hist_quantile(fv.hist_exchange_receive, 0.5))}/"
                        f"{_us(hist_quantile(fv.hist_exchange_receive, 0.99))}",
                "lat2": f"{_us(hist_quantile(fv.hist_receive_push, 0.5))}/"
                        f"{_us(hist_quantile(fv.hist_receive_push, 0.99))}",
                "gaps": str(c["gaps"]), "resyncs": str(c["resyncs"]),
                "reconnects": str(c["reconnects"]), "drops": str(drops), "retry": retry,
            }
            for col, value in row.items():
                if col in table.columns and table.get_cell(f.label, col) != value:
                    table.update_cell(f.label, col, value)

    def _update_rings(self, feeds: list[FeedView | None]) -> None:
        fills = self.controller.ring_fill()
        hws = self.controller.ring_high_water()
        lines = []
        for i, f in enumerate(self.cfg.feeds):
            if i >= len(fills):
                break
            fill, drops = fills[i]
            hw = hws[i] if i < len(hws) else 0.0
            n = 5 if self.compact else 12
            filled = int(round(fill * n))
            mark = min(n - 1, int(hw * n))
            bar = "".join("█" if k < filled else ("│" if k == mark else "░") for k in range(n))
            if self.compact:
                lines.append(f"{f.label:<6}{bar} {fill * 100:3.0f}% hw{hw * 100:3.0f}% drops {drops}")
            else:
                lines.append(f"{f.label:<6} {bar} {fill * 100:5.1f}% hw {hw * 100:5.1f}% drops {drops}")
        self.main.query_one("#rings", Static).update("\n".join(lines) or "no rings")

    def _update_procs(self) -> None:
        pids = self.controller.pids()
        if not pids:
            self.main.query_one("#procs", Static).update("no child processes\n(reading a stats block)")
            return
        lines = []
        for name, pid in pids.items():
            proc = self.procs.get(pid)
            try:
                if proc is None:
                    proc = self.procs[pid] = psutil.Process(pid)
                    proc.cpu_percent(None)
                cpu = proc.cpu_percent(None)
                rss = proc.memory_info().rss / 2**20
                lines.append(f"{name:<6}{cpu:4.0f}% {rss:4.0f}M" if self.compact else
                             f"{name:<7} pid {pid:<7} cpu {cpu:5.1f}% rss {rss:6.1f} MiB")
            except psutil.Error:
                lines.append(f"{name:<7} pid {pid:<7} gone")
        me = psutil.Process()
        cpu, rss = me.cpu_percent(None), me.memory_info().rss / 2**20
        lines.append(f"{'ui':<6}{cpu:4.0f}% {rss:4.0f}M" if self.compact else
                     f"{'ui':<7} pid {me.pid:<7} cpu {cpu:5.1f}% rss {rss:6.1f} MiB")
        if self.compact:
            lines = ["  ".join(lines[k:k + 2]) for k in range(0, len(lines), 2)]
        self.main.query_one("#procs", Static).update("\n".join(lines))

    def _note_state_changes(self, feeds: list[FeedView | None]) -> None:
        for f, fv in zip(self.cfg.feeds, feeds):
            if fv is None:
                continue
            now = (fv.state, fv.reason)
            if self.last_states.get(f.label) != now:
                self.last_states[f.label] = now
                style = STATE_STYLE.get(fv.state, "")
                self.log_line(f"{f.label}: [{style}]{fv.state.word}[/] {fv.reason}")

    def _check_acks(self, stats: StatsBlock) -> None:
        now = time.monotonic()
        for p in list(self.pending):
            seq, result, text = stats.read_ack(p.index)
            if seq == p.seq:
                self.pending.remove(p)
                ok = result == AckResult.OK
                msg = f"{p.label}: {p.what} {'acknowledged' if ok else result.name.lower()}: {text}"
                self.log_line(f"[{'green' if ok else 'red'}]{msg}[/]")
                self.notify(msg, severity="information" if ok else "error", timeout=4)
            elif now - p.sent > ACK_TIMEOUT:
                self.pending.remove(p)
                msg = f"{p.label}: {p.what} not acknowledged in {ACK_TIMEOUT:.0f} s (feed process down?)"
                self.log_line(f"[red]{msg}[/]")
                self.notify(msg, severity="error", timeout=4)

    def log_line(self, text: str) -> None:
        stamp = f"[dim]{time.strftime('%H:%M:%S')}[/] " if self.clock else ""
        self.main.query_one("#log", RichLog).write(stamp + text)

    # ------------------------------------------------------------ actions
    def _selected(self) -> tuple[int, str]:
        table = self.main.query_one("#feeds", DataTable)
        row = max(0, min(table.cursor_row, len(self.cfg.feeds) - 1))
        return row, self.cfg.feeds[row].label

    def _send(self, index: int, label: str, cmd: Command) -> None:
        """Post ``cmd`` to the feed (every book of it) and wait for its ack from the timer."""
        try:
            seq = self.controller.command(label, cmd)
        except (KeyError, AssertionError) as exc:
            self.log_line(f"[red]{label}: {cmd.name.lower()} failed: {exc}[/]")
            return
        self.pending.append(Pending(label, index, seq, cmd.name.lower(), time.monotonic()))
        self.log_line(f"{label}: {cmd.name.lower()} sent")

    def action_reconnect(self) -> None:
        self._send(*self._selected(), Command.RECONNECT)

    def action_resync(self) -> None:
        """A feed of one market: resync its book. A feed of several: its invalid books; `s`
        again within RESYNC_ALL_WITHIN s: all its books."""
        i, label = self._selected()
        if not self.cfg.feeds[i].is_book:
            self.log_line(f"[yellow]{label}: resync applies to book feeds only[/]")
            self.notify(f"{label} is not a book feed: nothing to resync", severity="warning")
            return
        if len(self.cfg.feeds[i].symbols) == 1:
            self._send(i, label, Command.RESYNC)
            return
        now = time.monotonic()
        if now - self.resync_at.pop(label, float("-inf")) <= RESYNC_ALL_WITHIN:
            self._send(i, label, Command.RESYNC)
            return
        self.resync_at[label] = now
        self._send(i, label, Command.RESYNC_INVALID)
        self.log_line(f"{label}: s again within {RESYNC_ALL_WITHIN:g} s resyncs all its books")

    def action_reconnect_all(self) -> None:
        for i, f in enumerate(self.cfg.feeds):
            self._send(i, f.label, Command.RECONNECT)

    def action_pause(self) -> None:
        self.paused = not self.paused
        self.sub_title = "PAUSED (data keeps flowing)" if self.paused else ""
        self.log_line("display paused" if self.paused else "display resumed")

    def action_cycle_book(self) -> None:
        """Focus the next ladder; with more markets than ladders, the next market comes into
        the next ladder (every market in turn)."""
        if not self.shown:
            return
        nxt = (self.focused_book + 1) % len(self.shown)
        if len(self.markets) > len(self.shown):
            k = (self.shown[self.focused_book] + 1) % len(self.markets)
            if k not in self.shown:
                self.shown[nxt] = k
                m = self.markets[k]
                ladder = self.main.query_one(f"#ladder{nxt}", DepthLadder)
                ladder.key = m.key
                ladder.digits, ladder.qdigits = m.fc.scales_of(m.key.split(":", 1)[1])
                ladder.show(None)
                spark = self.main.query_one(f"#spark{nxt}", ObiSparkline)
                spark.key = m.key
                spark.show([], 0.0, False)
            else:
                nxt = self.shown.index(k)
        self.focused_book = nxt
        for j in range(len(self.shown)):
            self.main.query_one(f"#ladder{j}").set_class(j == self.focused_book, "focused")
            self.main.query_one(f"#spark{j}").set_class(j == self.focused_book, "focused")

    def _set_rate(self, hz: float) -> None:
        self.refresh_hz = hz
        self._start_timer()
        self.log_line(f"refresh {hz:g} Hz")

    def action_faster(self) -> None:
        bigger = [h for h in REFRESH_STEPS if h > self.refresh_hz]
        self._set_rate(bigger[0] if bigger else self.refresh_hz)

    def action_slower(self) -> None:
        smaller = [h for h in REFRESH_STEPS if h < self.refresh_hz]
        self._set_rate(smaller[-1] if smaller else self.refresh_hz)

    def action_help(self) -> None:
        self.push_screen(HelpScreen([b for b in self.BINDINGS if isinstance(b, Binding)]))


def run_app(cfg: Config, *, sim: bool, sim_faults: list[str], refresh_hz: float, mouse: bool,
            record_dir: str | None, replay: str | None, replay_speed: float = 1.0, sim_rate: float | None = None,
            metrics: tuple[str, int] | None = None, top: int | None = None) -> int:
    """Start the supervisor (and the simulator), run the app, always stop everything."""
    import signal
    import sys

    import logging

    from obitui.logs import LogSpec, configure, ui_log_path
    from obitui.supervisor import Supervisor, SupervisorError
    # the terminal belongs to the UI: every process logs to a file instead (rotated by size)
    log_path = ui_log_path()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_file = str(log_path)
    configure(LogSpec(logging.INFO, False, log_file), "supervisor")
    sup = Supervisor(cfg, record_dir, log_file=log_file)
    holder: dict[str, ObituiApp] = {}
    deferred: list[tuple[int, float]] = []     # a signal that came while the fleet started
    stopping = False

    def on_signal(signum: int, _frame: Any) -> None:
        # a dropped SSH session (SIGHUP) or SIGTERM ends the app; the finally below cleans up
        nonlocal stopping
        if stopping:
            return      # already on the way out: the cleanup must run to its end
        app = holder.get("app")
        if app is not None and app.is_running:
            app.exit()
            return
        if app is not None:
            app.exit_on_ready = True   # not running yet (or done): it exits as soon as it is up
            return
        # Start-up. An exception raised here could land between the creation of a segment or
        # the start of a child and its bookkeeping, which the stop below then cannot undo: the
        # signal is acted on once the fleet is up (about a second). Only when start-up seems
        # stuck does a further signal, DEFER_LIMIT_S after the first, end it at once.
        if deferred and time.monotonic() - deferred[0][1] > DEFER_LIMIT_S:
            stopping = True
            raise SystemExit(128 + signum)
        if not deferred:
            deferred.append((signum, time.monotonic()))

    signal.signal(signal.SIGHUP, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        cfg = sup.launch(sim=sim, faults=sim_faults, replay=replay, replay_speed=replay_speed,
                         rate=sim_rate, metrics=metrics, top=top)
        if deferred:
            return 128 + deferred[0][0]
        app = holder["app"] = ObituiApp(cfg, sup, refresh_hz, mouse)
        if deferred:
            return 128 + deferred[0][0]
        app.run(mouse=mouse)
        return 0
    except SupervisorError as exc:
        print(f"obitui: {exc}", file=sys.stderr)
        return 1
    finally:
        # a second signal (or Ctrl+C before the UI owns the terminal) must not interrupt the
        # stop: it would leave children and this run's segments behind
        stopping = True
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        sup.stop()
