"""The Textual console. It reads only the stats block (and ring counters for fill levels),
at its own pace: one timer, all widget updates inside ``batch_update()``.

Attached to remote fleets (``--attach``), the block is one the console's own mirror fills
from NATS (obitui/bus/mirror.py): the controller's ``sync()`` runs at the start of each tick,
and a new ``layout()`` generation (a host, feed or book that came) is taken then."""
from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import IO, Any

# Textual's screen-update timer, paused between repaints, fires one to two of its periods after
# the change that resumes it: at its default 60 fps a key's repaint waited up to 33 ms for it
# (key -> repaint p90 25 ms, p99 41-43 ms at 150 markets); 120 fps halves that wait (issue #20,
# BENCHMARKS.md). Textual reads TEXTUAL_FPS (a documented setting) when it is first imported.
os.environ.setdefault("TEXTUAL_FPS", "120")

from rich.markup import escape
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.css.query import NoMatches
from textual.driver import Driver
from textual.screen import Screen
from textual.timer import Timer

from obitui.config import Config
from obitui.controller import Controller, ProcessSampler, send
from obitui.core.shm import ShmError
from obitui.core.stats import AckResult, Command, FeedView, StatsBlock, heartbeat_age, is_stale
from obitui.ui.base import Frame, ObituiScreen
from obitui.ui.help import HelpScreen
from obitui.ui.market import MarketScreen
from obitui.ui.model import Book, BookCache, Clock, Layout, Market, config_markets, local_layout, wall_clock
from obitui.ui.system import SystemScreen
from obitui.ui.watchlist import WatchlistScreen
from obitui.widgets.feeds import STATE_STYLE, OpLog

__all__ = ["Controller", "ObituiApp", "run_app"]

REFRESH_STEPS = (2.0, 4.0, 8.0, 10.0, 16.0)
ACK_TIMEOUT = 5.0
REMOTE_ACK_TIMEOUT = 8.0   # a remote feed's: the request to its host gives up first (mirror.REMOTE_TIMEOUT_S)
ACK_WORDS = ("refused", "timed out")   # an ack text "<word>: ..." says what became of a remote command
TABLE_EVERY = 0.5       # the feed table is a slow table (DataTable): 2 Hz
DEFER_LIMIT_S = 5.0     # a signal during start-up waits for the fleet to be up, at most this long
RESYNC_ALL_WITHIN = 2.0  # `s` again on the same feed this soon: resync all its books
LOG_KEEP = 500


@dataclass
class Pending:
    label: str
    index: int
    seq: int
    what: str
    sent: float
    timeout: float = ACK_TIMEOUT


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


class ObituiApp(App[None]):
    """The console: one display timer reads the stats block and updates the screen on top
    (a :class:`~obitui.ui.base.ObituiScreen`); the screens live in obitui/ui/, their widgets
    in obitui/widgets/. Home: the watchlist with several symbols, the market view with one."""
    CSS_PATH = "app.tcss"
    TITLE = "obitui"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (32, "-tall")]
    BINDINGS = [
        Binding("r", "reconnect", "Reconnect", id="feed.reconnect"),
        Binding("s", "resync", "Resync", id="feed.resync"),
        Binding("a", "reconnect_all", "Reconnect all", show=False, id="feed.reconnect_all"),
        Binding("b", "cycle_book", "Next book", show=False, id="display.cycle_book"),
        Binding("f", "system", "Feeds", id="screen.system"),
        Binding("w", "watchlist", "Watchlist", show=False, id="screen.watchlist"),
        Binding("p", "pause", "Pause", show=False, id="display.pause"),
        Binding("plus,equals_sign", "faster", "Faster", key_display="+", show=False, id="display.faster"),
        Binding("minus", "slower", "Slower", key_display="-", show=False, id="display.slower"),
        Binding("f1,question_mark", "help", "Help", key_display="F1", id="app.help"),
        Binding("q", "quit", "Quit", id="app.quit"),
    ]

    def __init__(self, cfg: Config, controller: Controller, refresh_hz: float = 8.0,
                 mouse: bool = True, clock: bool = True, now: Clock = wall_clock) -> None:
        """``clock``: a wall clock in the header and times in the log (off for snapshots);
        ``now``: the wall clock the book ages are measured with (tests freeze it)."""
        super().__init__()
        self.clock = clock
        self.now = now
        self.controller = controller
        self.refresh_hz = refresh_hz
        self.mouse_enabled = mouse
        layout = getattr(controller, "layout", None)
        self._adopt(layout() if callable(layout) else local_layout(cfg))
        self.cache = BookCache()
        self.sampler = ProcessSampler()
        self.log_lines: deque[str] = deque(maxlen=LOG_KEEP)
        self.resync_at: dict[str, float] = {}     # label -> when `s` last sent RESYNC_INVALID
        self.paused = False
        self.timer: Timer | None = None
        self.pending: list[Pending] = []
        self.last_states: dict[str, tuple[Any, str]] = {}
        self.ticks = 0
        self.ready = False      # the home screen composed
        self.exit_on_ready = False   # a signal (or the terminal's end) came before it ran
        self.ui_loop: asyncio.AbstractEventLoop | None = None
        self.last_slow = 0.0
        self.last_table = 0.0
        self.last_poll = 0.0

    def _adopt(self, layout: Layout) -> None:
        """What the console shows: the feeds, books and markets of ``layout``."""
        self.layout = layout
        self.cfg: Config = layout.cfg
        self.books: list[Book] = layout.books
        self.markets: list[Market] = config_markets(self.books)
        self.market_of = {b.key: i for i, m in enumerate(self.markets) for b in m.books}

    @property
    def attached(self) -> bool:
        """Remote fleets are shown (a host column in the tables)."""
        return self.layout.attached

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

    # ------------------------------------------------------------ screens
    @property
    def multi(self) -> bool:
        """Several symbols: the watchlist is home."""
        return len(self.markets) > 1

    def home_screen(self) -> ObituiScreen:
        if self.attached:           # hosts come and go: the watchlist shows them all
            return WatchlistScreen()
        return WatchlistScreen() if self.multi or not self.markets else MarketScreen(0)

    def on_mount(self) -> None:
        self.ui_loop = asyncio.get_running_loop()
        self.push_screen(self.home_screen())

    def on_ready(self) -> None:
        self.ready = True
        if self.exit_on_ready:
            self.exit()
            return
        self._start_timer()
        self.tick()
        self.call_after_refresh(self._freeze_heap)

    @staticmethod
    def _freeze_heap() -> None:
        """The app, its home screen and widgets live as long as the process: keep the cyclic
        GC off them, so that a full collection scans only what was made since (it took up to
        18 ms at 300 books, a keystroke's repaint waiting behind it). Screens opened later
        (the market view) stay collectable."""
        gc.collect()
        gc.freeze()

    def data_screen(self) -> ObituiScreen | None:
        """The screen the timer updates: the one on top, or under the help."""
        for screen in reversed(self.screen_stack):
            if isinstance(screen, ObituiScreen):
                return screen
        return None

    def open_market(self, key: str) -> None:
        """Enter on a watchlist row: the market view of its symbol, that venue's book focused."""
        i = self.market_of.get(key)
        if i is not None:
            self.push_screen(MarketScreen(i, key))

    def switch_market(self, screen: MarketScreen) -> None:
        """The market view moved to a market with another number of venues: a new screen."""
        self.switch_screen(MarketScreen(screen.market_index))

    def action_back(self) -> None:
        """Esc: the screen under this one (the home screen stays)."""
        if len([s for s in self.screen_stack if isinstance(s, ObituiScreen)]) > 1:
            self.pop_screen()

    def action_system(self) -> None:
        if isinstance(self.screen, SystemScreen):
            self.pop_screen()
        elif isinstance(self.screen, ObituiScreen):
            self.push_screen(SystemScreen())

    def action_watchlist(self) -> None:
        for k, screen in enumerate(self.screen_stack):
            if isinstance(screen, WatchlistScreen):
                while len(self.screen_stack) > k + 1:
                    self.pop_screen()
                return
        self.push_screen(WatchlistScreen())

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for b in self._help_bindings():
            action = b.action
            yield SystemCommand(b.description, f"key {b.key_display or b.key.split(',')[0]}",
                                lambda a=action: self.run_action(a, self.data_screen()))

    def _help_bindings(self) -> list[Binding]:
        screen = self.data_screen()
        own = [b for b in getattr(screen, "BINDINGS", []) if isinstance(b, Binding)]
        return own + [b for b in self.BINDINGS if isinstance(b, Binding)]

    # ------------------------------------------------------------ the one timer
    def _start_timer(self) -> None:
        if self.timer is not None:
            self.timer.stop()
        self.timer = self.set_interval(1.0 / self.refresh_hz, self.tick)

    def tick(self) -> None:
        # is_running turns False as Textual's shutdown begins, before it removes the widgets and
        # long before the app's Unmount: a tick queued in between must not look for them
        if not self.ready or not self.is_running:
            return
        try:
            self._tick()
        except NoMatches:
            # the app is being torn down (quit), or a screen is being composed: draw next tick
            screen = self.data_screen()
            if not (self._exit or screen is None or not screen.is_attached or not screen.is_mounted):
                raise

    def on_unmount(self) -> None:
        self.ready = False
        if self.timer is not None:
            self.timer.stop()

    def _tick(self) -> None:
        self.ticks += 1
        sync = getattr(self.controller, "sync", None)
        if sync is not None:        # an attached console: what came over NATS, into the block
            sync()
            layout = self.controller.layout()  # type: ignore[attr-defined]
            if layout.generation != self.layout.generation:
                self._relayout(layout)
        if time.monotonic() - self.last_poll >= TABLE_EVERY:   # child watch: 2 Hz is plenty
            self.last_poll = time.monotonic()
            for event in self.controller.poll():
                self.log_line(f"[yellow]{escape(event)}[/]")
        stats = self.controller.stats
        if stats is None:
            return
        self._check_acks(stats)
        feeds = [stats.read_feed(i) for i in range(len(self.cfg.feeds))]
        feed_stale = self._feed_stale(feeds)
        self._note_state_changes(feeds)
        if self.paused:
            return
        screen = self.data_screen()
        if screen is None or not screen.is_mounted:
            return
        now = time.monotonic()
        ev = stats.read_engine()
        age = heartbeat_age(ev.heartbeat_ns) if ev is not None else None
        table = now - self.last_table >= TABLE_EVERY
        slow = now - self.last_slow >= 1.0
        if table:
            self.last_table = now
        if slow:
            self.last_slow = now
        frame = Frame(stats, feeds, age if is_stale(age) else None, self.now(), slow, table, feed_stale)
        with self.batch_update():
            screen.update_data(frame)

    def _feed_stale(self, feeds: list[FeedView | None]) -> list[float | None]:
        """Per feed: a remote feed's silence when it is stale (its slot's heartbeat is its
        host's last message), else None."""
        if not self.attached:
            return []
        out: list[float | None] = []
        for host, fv in zip(self.layout.hosts, feeds):
            age = heartbeat_age(fv.heartbeat_ns) if host is not None and fv is not None else None
            out.append(age if is_stale(age) else None)
        return out

    def _relayout(self, layout: Layout) -> None:
        """An attached console's new layout (a host, feed or book that came): every screen
        takes it."""
        self._adopt(layout)
        self.cache = BookCache()
        for screen in self.screen_stack:
            if isinstance(screen, ObituiScreen):
                screen.layout_changed()

    # ------------------------------------------------------------ log and acks
    def _note_state_changes(self, feeds: list[FeedView | None]) -> None:
        for f, fv in zip(self.cfg.feeds, feeds):
            if fv is None:
                continue
            now = (fv.state, fv.reason)
            if self.last_states.get(f.label) != now:
                self.last_states[f.label] = now
                style = STATE_STYLE.get(fv.state, "")
                self.log_line(f"{escape(f.label)}: [{style}]{fv.state.word}[/] {escape(fv.reason)}")

    def _check_acks(self, stats: StatsBlock) -> None:
        now = time.monotonic()
        for p in list(self.pending):
            # a feed beyond the block (one the layout no longer has room for) never answers:
            # its command expires like an unanswered one
            seq, result, text = stats.read_ack(p.index) if p.index < stats.n_feeds else (None, AckResult.FAILED, "")
            if seq == p.seq:
                self.pending.remove(p)
                ok = result == AckResult.OK
                word = "acknowledged" if ok else result.name.lower()
                head, sep, rest = text.partition(": ")
                if not ok and sep and head in ACK_WORDS:     # a remote fleet's refusal, no answer
                    word, text = head, rest
                msg = f"{p.label}: {p.what} {word}: {text}"
                self.log_line(f"[{'green' if ok else 'red'}]{escape(msg)}[/]")
                self.notify(escape(msg), severity="information" if ok else "error", timeout=4)
            elif now - p.sent > p.timeout:
                self.pending.remove(p)
                msg = f"{p.label}: {p.what} not acknowledged in {p.timeout:.0f} s (feed process down?)"
                self.log_line(f"[red]{escape(msg)}[/]")
                self.notify(escape(msg), severity="error", timeout=4)

    def log_line(self, text: str) -> None:
        stamp = f"[dim]{time.strftime('%H:%M:%S')}[/] " if self.clock else ""
        line = stamp + text
        self.log_lines.append(line)
        for screen in self.screen_stack:
            for log in screen.query(OpLog):
                log.write(line)

    def fill_log(self, log: OpLog) -> None:
        """A log widget that just mounted: the lines so far."""
        for line in self.log_lines:
            log.write(line)

    def log_text(self) -> str:
        return "\n".join(self.log_lines)

    # ------------------------------------------------------------ actions
    def _target(self) -> tuple[int, str | None] | None:
        screen = self.data_screen()
        t = screen.target() if screen is not None else None
        return t if t is not None and t[0] < len(self.cfg.feeds) else None

    def _send(self, index: int, label: str, cmd: Command, symbol: str | None = None) -> None:
        """Post ``cmd`` to the feed (every book of it, or the market ``symbol``) and wait for
        its ack from the timer."""
        what = cmd.name.lower() + (f" {symbol}" if symbol else "")
        try:
            seq = send(self.controller, self.cfg, label, cmd, symbol)
        except (KeyError, AssertionError) as exc:
            self.log_line(f"[red]{escape(f'{label}: {what} failed: {exc}')}[/]")
            return
        remote = index < len(self.layout.hosts) and self.layout.hosts[index] is not None
        self.pending.append(Pending(label, index, seq, cmd.name.lower(), time.monotonic(),
                                    REMOTE_ACK_TIMEOUT if remote else ACK_TIMEOUT))
        self.log_line(escape(f"{label}: {what} sent" + (f" to {self.layout.hosts[index]}" if remote else "")))

    def action_reconnect(self) -> None:
        t = self._target()
        if t is not None:
            self._send(t[0], self.cfg.feeds[t[0]].label, Command.RECONNECT)

    def action_resync(self) -> None:
        """On a book (watchlist, market view): resync that book. On a feed (feeds screen): a
        feed of one market resyncs its book; of several, its invalid books, and `s` again
        within RESYNC_ALL_WITHIN s all of them."""
        t = self._target()
        if t is None:
            return
        i, symbol = t
        label = self.cfg.feeds[i].label
        if not self.cfg.feeds[i].is_book:
            self.log_line(f"[yellow]{label}: resync applies to book feeds only[/]")
            self.notify(f"{label} is not a book feed: nothing to resync", severity="warning")
            return
        if symbol is not None or len(self.cfg.feeds[i].symbols) == 1:
            self._send(i, label, Command.RESYNC, symbol if len(self.cfg.feeds[i].symbols) > 1 else None)
            return
        now = time.monotonic()
        if now - self.resync_at.pop(label, float("-inf")) <= RESYNC_ALL_WITHIN:
            self._send(i, label, Command.RESYNC)
            return
        self.resync_at[label] = now
        self._send(i, label, Command.RESYNC_INVALID)
        self.log_line(f"{label}: s again within {RESYNC_ALL_WITHIN:g} s resyncs all its books")

    def action_reconnect_all(self) -> None:
        """Every feed of this machine's fleet (a remote fleet's feeds one at a time, with `r`)."""
        local = [i for i, h in enumerate(self.layout.hosts) if h is None]
        if not local:
            self.log_line("[yellow]a reconnects this machine's feeds: none here (r on a remote feed)[/]")
            self.notify("no local feeds: r reconnects the highlighted remote feed", severity="warning")
        for i in local:
            self._send(i, self.cfg.feeds[i].label, Command.RECONNECT)

    def action_pause(self) -> None:
        self.paused = not self.paused
        self.sub_title = "PAUSED (data keeps flowing)" if self.paused else ""
        for screen in self.screen_stack:
            screen.set_class(self.paused, "-paused")
        self.log_line("display paused" if self.paused else "display resumed")

    def action_cycle_book(self) -> None:
        screen = self.data_screen()
        if screen is not None:
            screen.cycle_book()

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
        if isinstance(self.screen, HelpScreen):
            return
        screen = self.data_screen()
        own = [b for b in getattr(screen, "BINDINGS", []) if isinstance(b, Binding)]
        name = {WatchlistScreen: "Watchlist", MarketScreen: "Market view",
                SystemScreen: "Feeds & system"}.get(type(screen), "This screen")
        self.push_screen(HelpScreen([(name, own), ("Everywhere", [b for b in self.BINDINGS
                                                                 if isinstance(b, Binding)])]))


def _log_to_file() -> str:
    """The terminal belongs to the UI: every process logs to a file instead (rotated by size)."""
    from obitui.logs import LogSpec, configure, ui_log_path
    log_path = ui_log_path()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    configure(LogSpec(logging.INFO, False, str(log_path)), "supervisor")
    return str(log_path)


def run_app(cfg: Config, *, sim: bool, sim_faults: list[str], refresh_hz: float, mouse: bool,
            record_dir: str | None, replay: str | None, replay_speed: float = 1.0, sim_rate: float | None = None,
            metrics: tuple[str, int] | None = None, top: int | None = None, publish: Any = None,
            attach: Any = None) -> int:
    """Start the supervisor (and the simulator, and the NATS publisher with ``publish``), run
    the app, always stop everything. ``attach`` (a bus.attach.Attachment, not started): remote
    fleets beside this one (``--sim --attach ...``), through the console's mirror block."""
    import signal
    import sys

    from obitui.supervisor import Supervisor, SupervisorError
    log_file = _log_to_file()
    sup = Supervisor(cfg, record_dir, log_file=log_file, publish=publish)
    attached: Any = None
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
        controller: Controller = sup
        if attach is not None:
            from obitui.bus.mirror import AttachController
            controller = attached = AttachController(attach, local=sup)
        app = holder["app"] = ObituiApp(cfg, controller, refresh_hz, mouse)
        if deferred:
            return 128 + deferred[0][0]
        app.run(mouse=mouse)
        return 0
    except SupervisorError as exc:
        print(f"obitui: {exc}", file=sys.stderr)
        return 1
    except ShmError as exc:           # the attached console's block
        print(f"obitui: shared memory: {exc}", file=sys.stderr)
        return 1
    finally:
        # a second signal (or Ctrl+C before the UI owns the terminal) must not interrupt the
        # stop: it would leave children and this run's segments behind
        stopping = True
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            if attached is not None:
                attached.stop()
            elif attach is not None:
                attach.close()
        finally:
            sup.stop()


def run_attach_app(urls: list[str], *, refresh_hz: float, mouse: bool, creds: str | None = None,
                   ca_file: str | None = None) -> int:
    """``obitui --attach URL[,URL]`` with no local fleet: the console on the remote fleets
    (obitui/bus/mirror.py); its block is removed however the app ends."""
    import signal
    import sys

    from obitui.bus.attach import Attachment
    from obitui.bus.mirror import AttachController
    _log_to_file()
    holder: dict[str, ObituiApp] = {}
    stop = {"signal": 0}

    def on_signal(signum: int, _frame: Any) -> None:
        app = holder.get("app")
        if app is not None and app.is_running:
            app.exit()
        elif app is not None:
            app.exit_on_ready = True
        else:
            stop["signal"] = signum    # before the app: acted on as soon as the block is made

    # SIGINT too: a KeyboardInterrupt raised between the creation of the mirror's block and
    # the assignment of the controller below would leave the block behind (a Ctrl+C before
    # the UI owns the terminal is acted on once the controller is up, like SIGTERM)
    signal.signal(signal.SIGHUP, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    attachment = Attachment(urls, creds, ca_file)
    controller = None
    try:
        controller = AttachController(attachment)
        if stop["signal"]:
            return 128 + stop["signal"]
        app = holder["app"] = ObituiApp(controller.layout().cfg, controller, refresh_hz, mouse)
        if stop["signal"]:
            return 128 + stop["signal"]
        app.run(mouse=mouse)
        return 0
    except ShmError as exc:
        print(f"obitui: shared memory: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if controller is not None:
            controller.stop()
        else:
            attachment.close()
