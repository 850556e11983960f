"""The feeds table (a row per feed process, a visible row cursor: the feed `r`/`s` act on), the
full reason of the highlighted feed, the rings panel and the processes panel. Attached to
remote fleets, the table has a ``host`` column (this machine's feeds: ``local``), and a remote
feed whose host went silent shows ``stale`` with the reason ``stale: no heartbeat for N s``."""
from __future__ import annotations

import time
from typing import Any

from rich.markup import escape
from textual.widgets import DataTable, RichLog, Static

from obitui.config import Config
from obitui.controller import ProcSample
from obitui.core.stats import FeedState, FeedView, hist_quantile
from obitui.widgets.format import LOCAL, feed_name, fit_words

STATE_STYLE = {
    FeedState.CONNECTED_SYNCED: "green", FeedState.CONNECTED: "green", FeedState.LIVE: "green",
    FeedState.SYNCING: "yellow", FeedState.SUBSCRIBING: "yellow", FeedState.CONNECTING: "yellow",
    FeedState.RESYNCING: "yellow", FeedState.BACKOFF: "red", FeedState.FAILED: "bold red",
    FeedState.STOPPED: "dim",
}


def _us(ns: float | None) -> str:
    if ns is None:
        return "-"
    return f"{ns / 1e3:.0f}" if ns < 1e7 else f"{ns / 1e6:.0f}ms"


def _age(now_ns: int, then_ns: int) -> str:
    if not then_ns:
        return "-"
    s = max(0.0, (now_ns - then_ns) / 1e9)
    return f"{s:.1f}s" if s < 100 else f"{s / 60:.0f}m"


class FeedsTable(DataTable):  # type: ignore[type-arg]
    """Every feed of the config; ``update`` writes the cells that changed."""
    DEFAULT_CSS = """
    FeedsTable { height: 1fr; min-height: 4; border: round $panel-lighten-2; }
    FeedsTable:focus { border: round $accent; }
    """
    # (title, key, width, priority: the columns that do not fit are left out, highest first)
    COLUMNS = (("feed", "label", 8, 0), ("state", "state", 16, 0), ("books", "books", 7, 1),
               ("conn", "conns", 4, 1), ("reason", "reason", 22, 3), ("age", "age", 5, 0),
               ("msg/s", "rate", 5, 1), ("ex→rx µs", "lat1", 11, 5),
               ("rx→ring", "lat2", 9, 5), ("gaps", "gaps", 4, 1), ("resync", "resyncs", 6, 2),
               ("reconn", "reconnects", 6, 1), ("drops", "drops", 5, 1), ("retry", "retry", 5, 2))

    HOST = ("host", "host", 4, 1)      # attached to remote fleets: after the feed's label

    def __init__(self, cfg: Config, hosts: list[str | None] | None = None, **kw: Any) -> None:
        """``hosts``: per feed, its host (None: this machine's); given, the table has a host
        column (an attached console)."""
        super().__init__(cursor_type="row", zebra_stripes=True, **kw)
        self.cfg = cfg
        self.hosts = hosts
        self.compact = False
        self.frames_prev: dict[str, tuple[int, float]] = {}
        self.rates: dict[str, float] = {}
        self.reasons: dict[str, str] = {}

    def build(self, width: int) -> None:
        """The columns that fit ``width`` without scrolling (each cell has 1 column of padding
        on both sides), the least important left out first."""
        every = list(self.COLUMNS)
        if self.hosts is not None:
            names = [LOCAL if h is None else h for h in self.hosts]
            every.insert(1, (*self.HOST[:2], max([self.HOST[2], *map(len, names)]), self.HOST[3]))
            # a remote feed has no retry time (its host does not send it): left out before the reason
            every = [(*c[:3], 4) if c[1] == "retry" else c for c in every]
        cols = list(every)
        while sum(c[2] + 2 for c in cols) > width - 2:
            worst = max(cols, key=lambda c: (c[3], every.index(c)))
            if worst[3] == 0:
                break
            cols.remove(worst)
        self.compact = len(cols) < len(every)
        cursor = self.cursor_row
        self.clear(columns=True)
        for title, key, w, _ in cols:
            self.add_column(title, key=key, width=w)
        for i, f in enumerate(self.cfg.feeds):
            host = self.hosts[i] if self.hosts is not None and i < len(self.hosts) else None
            cells = {"label": escape(f.label if host is None else feed_name(f.label))}
            if self.hosts is not None:
                cells["host"] = escape(LOCAL if host is None else host)
            self.add_row(*(cells.get(str(key.value), "") for key in self.columns), key=f.label)
        self.move_cursor(row=max(0, cursor))

    @property
    def selected(self) -> int:
        return max(0, min(self.cursor_row, len(self.cfg.feeds) - 1))

    def update(self, feeds: list[FeedView | None], fills: list[tuple[float, int]], now_ns: int,
               stale: list[float | None] | None = None) -> None:
        """``stale``: per feed, how long a remote feed's host has been silent when too long."""
        now = time.monotonic()
        for i, (f, fv) in enumerate(zip(self.cfg.feeds, feeds)):
            if fv is None:
                continue
            if f.label not in self.rows:
                continue                # a feed that came after the last build: next build
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
            n_books = c.get("books", 0) or (len(f.symbols) if f.is_book else 0)
            silent = stale[i] if stale is not None and i < len(stale) else None
            reason = fv.reason if silent is None else f"stale: no heartbeat for {int(silent)} s"
            self.reasons[f.label] = reason
            row = {
                "state": (f"[{STATE_STYLE.get(fv.state, '')}]{fv.state.word}[/]" if silent is None
                          else "[bold red]stale[/]"),
                "books": f"{c.get('books_synced', 0)}/{n_books}" if f.is_book else "-",
                "conns": f"{c.get('connections_up', 0)}/{c.get('connections', 0)}" if c.get("connections") else "-",
                "reason": escape(fit_words(reason, 22)), "age": _age(now_ns, fv.last_receive_ns),
                "rate": f"{self.rates.get(f.label, 0.0):.0f}",
                "lat1": f"{_us(hist_quantile(fv.hist_exchange_receive, 0.5))}/"
                        f"{_us(hist_quantile(fv.hist_exchange_receive, 0.99))}",
                "lat2": f"{_us(hist_quantile(fv.hist_receive_push, 0.5))}/"
                        f"{_us(hist_quantile(fv.hist_receive_push, 0.99))}",
                "gaps": str(c["gaps"]), "resyncs": str(c["resyncs"]),
                "reconnects": str(c["reconnects"]), "drops": str(drops), "retry": retry,
            }
            if self.hosts is not None:
                host = self.hosts[i] if i < len(self.hosts) else None
                row["host"] = ("[bold red]" + escape(host) + "[/]" if silent is not None and host
                               else escape(LOCAL if host is None else host))
            for col, value in row.items():
                if col in self.columns and self.get_cell(f.label, col) != value:
                    self.update_cell(f.label, col, value)


class FeedDetail(Static):
    """The highlighted feed's whole reason (wrapped, never cut)."""
    DEFAULT_CSS = """
    FeedDetail { height: auto; max-height: 3; padding: 0 1; color: $text-muted; }
    """


class RingsPanel(Static):
    DEFAULT_CSS = """
    RingsPanel { width: 1fr; border: round $panel-lighten-2; padding: 0 1; }
    """

    def show(self, cfg: Config, fills: list[tuple[float, int]], hws: list[float], compact: bool) -> None:
        lines = []
        for i, f in enumerate(cfg.feeds):
            if i >= len(fills):
                break
            fill, drops = fills[i]
            hw = hws[i] if i < len(hws) else 0.0
            n = 5 if compact else 12
            filled = int(round(fill * n))
            mark = min(n - 1, int(hw * n))
            bar = "".join("█" if k < filled else ("│" if k == mark else "░") for k in range(n))
            if compact:
                lines.append(f"{f.label:<6}{bar} {fill * 100:3.0f}% hw{hw * 100:3.0f}% drops {drops}")
            else:
                lines.append(f"{f.label:<6} {bar} {fill * 100:5.1f}% hw {hw * 100:5.1f}% drops {drops}")
        self.update("\n".join(lines) or "no rings")


class ProcsPanel(Static):
    DEFAULT_CSS = """
    ProcsPanel { width: 1fr; border: round $panel-lighten-2; padding: 0 1; }
    """

    def show(self, samples: list[ProcSample], compact: bool) -> None:
        if not samples:
            self.update("no child processes\n(reading a stats block)")
            return
        lines = []
        for s in samples:
            if s.cpu is None:
                lines.append(f"{s.name:<7} pid {s.pid:<7} gone")
                continue
            rss = s.rss / 2**20
            lines.append(f"{s.name[:9]:<9}{s.cpu:4.0f}% {rss:4.0f}M" if compact else
                         f"{s.name:<9} pid {s.pid:<7} cpu {s.cpu:5.1f}% rss {rss:6.1f} MiB")
        if compact:
            lines = ["  ".join(lines[k:k + 2]) for k in range(0, len(lines), 2)]
        self.update("\n".join(lines))


class OpLog(RichLog):
    """The operator log (state changes, commands and their acknowledgements); each screen that
    shows one is filled from the app's log lines when it mounts."""
    DEFAULT_CSS = """
    OpLog { height: 6; border: round $panel-lighten-2; }
    """

    def __init__(self, **kw: Any) -> None:
        super().__init__(max_lines=500, markup=True, wrap=False, **kw)
