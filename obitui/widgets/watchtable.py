"""The watchlist table: one line per market, a header line, a row cursor (line API).

Only the lines on screen are drawn; ``set_rows`` takes the rows in display order and refreshes
only the lines whose cells changed (a row that did not change is not drawn again). Columns that
do not fit the width are left out, least important first; a cell is never cut: its column is
as wide as its widest text."""
from __future__ import annotations

from dataclasses import dataclass

from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding
from textual.events import MouseDown, MouseScrollDown, MouseScrollUp
from textual.geometry import Region
from textual.message import Message
from textual.strip import Strip

from obitui.widgets.styled import StyledLines


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    width: int          # at least this wide
    priority: int       # 0: always shown; higher: left out first when the width is short
    right: bool = True


Cells = dict[str, tuple[str, str]]      # column key -> (text, style word)


class WatchTable(StyledLines, can_focus=True):
    COMPONENT_CLASSES = {"watch--header", "watch--cursor", "watch--ok", "watch--bad", "watch--dim",
                         "watch--pos", "watch--neg", "watch--up", "watch--down"}
    DEFAULT_CSS = """
    WatchTable { height: 1fr; }
    WatchTable > .watch--header { text-style: bold; background: $panel; }
    WatchTable > .watch--cursor { background: $accent 40%; }
    WatchTable:focus > .watch--cursor { background: $accent 70%; }
    WatchTable > .watch--ok { color: $success; }
    WatchTable > .watch--bad { color: $warning; text-style: bold; }
    WatchTable > .watch--dim { color: $text-muted; }
    WatchTable > .watch--pos { color: $success; }
    WatchTable > .watch--neg { color: $error; }
    WatchTable > .watch--up { color: $success; }
    WatchTable > .watch--down { color: $error; }
    """
    BINDINGS = [
        Binding("up,k", "move(-1)", "Up", show=False),
        Binding("down,j", "move(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "edge(0)", "First", show=False),
        Binding("end", "edge(1)", "Last", show=False),
    ]

    class Selected(Message):
        """Enter (or a double click) on a row."""

        def __init__(self, key: str) -> None:
            super().__init__()
            self.key = key

    def __init__(self, columns: list[Column], **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.columns = columns
        self.keys: list[str] = []                  # row keys in display order
        self.cells: dict[str, Cells] = {}
        self.cursor = 0
        self.top = 0                               # first row on screen
        self.widths: dict[str, int] = {c.key: max(c.width, len(c.title)) for c in columns}
        self.shown: list[Column] = []
        self._laid_for = -1
        self._strips: dict[str, tuple[tuple[object, ...], Strip]] = {}
        self._ver: dict[str, int] = {}
        self.sort_key = ""
        self.sort_desc = False
        self.drawn = 0                             # rows drawn (render_line of a row)

    # ------------------------------------------------------------ data
    @property
    def page(self) -> int:
        return max(1, self.size.height - 1)

    def visible(self) -> range:
        """Indices (display order) of the rows on screen."""
        return range(self.top, min(len(self.keys), self.top + self.page))

    @property
    def cursor_key(self) -> str | None:
        return self.keys[self.cursor] if 0 <= self.cursor < len(self.keys) else None

    def set_rows(self, keys: list[str], cells: dict[str, Cells]) -> None:
        """The rows in display order and their cells (every row's, or only those that may have
        changed: rows not in ``cells`` keep theirs). The cursor stays on its market."""
        old_key = self.cursor_key
        order_changed = keys != self.keys
        widths_changed = False
        for k, cs in cells.items():
            for col, (text, _) in cs.items():
                if col in self.widths and len(text) > self.widths[col]:
                    self.widths[col] = len(text)
                    widths_changed = True
        if order_changed:
            self.keys = list(keys)
            if old_key in cells or old_key in self.cells:
                try:
                    self.cursor = self.keys.index(old_key)  # type: ignore[arg-type]
                except ValueError:
                    self.cursor = min(self.cursor, max(0, len(self.keys) - 1))
            self.cursor = min(self.cursor, max(0, len(self.keys) - 1))
            self._scroll_to_cursor()
        changed = [k for k, cs in cells.items() if self.cells.get(k) != cs]
        for k in changed:
            self.cells[k] = dict(cells[k])
            self._ver[k] = self._ver.get(k, 0) + 1
        if order_changed or widths_changed:
            self._laid_for = -1
            self.refresh()
            return
        where = {k: i for i, k in enumerate(self.keys[self.top:self.top + self.page])}
        for k in changed:
            y = where.get(k)
            if y is not None:
                self.refresh(Region(0, y + 1, self.size.width, 1))

    def sort_by(self, key: str, desc: bool) -> None:
        self.sort_key, self.sort_desc = key, desc
        self._laid_for = -1
        self.refresh()

    # ------------------------------------------------------------ navigation
    def _scroll_to_cursor(self) -> None:
        if self.cursor < self.top:
            self.top = self.cursor
        elif self.cursor >= self.top + self.page:
            self.top = self.cursor - self.page + 1
        self.top = max(0, min(self.top, max(0, len(self.keys) - self.page)))

    def move_cursor(self, row: int) -> None:
        row = max(0, min(row, len(self.keys) - 1))
        if row == self.cursor:
            return
        top = self.top
        self.cursor = row
        self._scroll_to_cursor()
        self.refresh()
        self.post_message(self.CursorMoved(self.cursor_key or "", top != self.top))

    class CursorMoved(Message):
        def __init__(self, key: str, scrolled: bool) -> None:
            super().__init__()
            self.key = key
            self.scrolled = scrolled

    def action_move(self, n: int) -> None:
        self.move_cursor(self.cursor + n)

    def action_page(self, n: int) -> None:
        self.move_cursor(self.cursor + n * self.page)

    def action_edge(self, end: int) -> None:
        self.move_cursor(len(self.keys) - 1 if end else 0)

    def action_select(self) -> None:
        if self.cursor_key is not None:
            self.post_message(self.Selected(self.cursor_key))

    def on_mouse_scroll_down(self, event: MouseScrollDown) -> None:
        self.move_cursor(self.cursor + 3)

    def on_mouse_scroll_up(self, event: MouseScrollUp) -> None:
        self.move_cursor(self.cursor - 3)

    def on_mouse_down(self, event: MouseDown) -> None:
        if event.y >= 1:
            row = self.top + event.y - 1
            if row == self.cursor and event.chain >= 2:
                self.action_select()
            else:
                self.move_cursor(row)

    # ------------------------------------------------------------ drawing
    def _layout(self, width: int) -> None:
        """The columns that fit ``width`` (the least important left out first)."""
        cols = list(self.columns)
        while cols and sum(self.widths[c.key] + 1 for c in cols) > width:
            worst = max(cols, key=lambda c: (c.priority, self.columns.index(c)))
            if worst.priority == 0:
                break
            cols.remove(worst)
        self.shown = cols
        self._laid_for = width
        self._strips.clear()

    def _title(self, c: Column) -> str:
        t = c.title
        if c.key == self.sort_key:
            t += "↓" if self.sort_desc else "↑"
        return t

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        if self._laid_for != width:
            self._layout(width)
        if y == 0:
            head = self.style_of("watch--header")
            segs = []
            for c in self.shown:
                w = self.widths[c.key]
                t = self._title(c)
                w = max(w, len(t))
                segs.append(Segment((t.rjust(w) if c.right else t.ljust(w)) + " ", head))
            used = sum(len(s.text) for s in segs)
            n = len(self.keys)
            pos = f" {self.top + 1}-{min(n, self.top + self.page)}/{n} " if n > self.page else ""
            segs.append(Segment(pos.rjust(max(0, width - used)), head))
            return Strip(segs).crop(0, width)
        i = self.top + y - 1
        if i >= len(self.keys):
            return Strip.blank(width)
        key = self.keys[i]
        cells = self.cells.get(key, {})
        cur = i == self.cursor
        sig = (self._ver.get(key, 0), cur, self.has_focus)
        got = self._strips.get(key)
        if got is not None and got[0] == sig:
            return got[1]
        self.drawn += 1
        base = self.style_of("watch--cursor") if cur else Style()
        segs = []
        for c in self.shown:
            text, word = cells.get(c.key, ("", ""))
            w = max(self.widths[c.key], len(self._title(c)))
            style = base + self.style_of(f"watch--{word}") if word else base
            segs.append(Segment(text.rjust(w) if c.right else text.ljust(w), style))
            segs.append(Segment(" ", base))
        used = sum(len(s.text) for s in segs)
        if used < width:
            segs.append(Segment(" " * (width - used), base))
        strip = Strip(segs).crop(0, width)
        self._strips[key] = (sig, strip)
        return strip

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()
