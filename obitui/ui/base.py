"""What every screen of the console shares: the frame of one display tick, and the hooks the
app's keys call (``target`` for `r`/`s`, ``cycle_book`` for `b`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from textual.screen import Screen

from obitui.core.stats import BookView, FeedView, StatsBlock

if TYPE_CHECKING:
    from obitui.app import ObituiApp
    from obitui.ui.model import Book


@dataclass
class Frame:
    """One display tick: the block, every feed's view, the engine's staleness (seconds since
    its last beat when that is too long, else None), the wall clock, and whether the slow
    panels are due (``slow``: once a second; ``table``: twice a second). ``feed_stale``: per
    feed of a remote fleet (an attached console), seconds since its host's last message when
    that is too long, else None (a local feed: always None)."""
    stats: StatsBlock
    feeds: list[FeedView | None]
    stale_s: float | None
    now_ns: int
    slow: bool
    table: bool
    feed_stale: list[float | None] = field(default_factory=list)

    def feed_state(self, book: Book) -> str:
        fv = self.feeds[book.feed] if book.feed < len(self.feeds) else None
        return fv.state.word if fv is not None else ""

    def stale_for(self, book: Book) -> float | None:
        """How long ``book``'s figures have been frozen, when too long (None: live): a local
        book's with this machine's engine, a remote one's with its host."""
        if book.host is None:
            return self.stale_s
        return self.feed_stale[book.feed] if book.feed < len(self.feed_stale) else None


class ObituiScreen(Screen[None]):
    """A screen the display timer updates."""

    @property
    def oapp(self) -> ObituiApp:
        return self.app  # type: ignore[return-value]

    def update_data(self, frame: Frame) -> None:
        """Read what the screen shows and update its widgets (inside the app's batch_update)."""

    def target(self) -> tuple[int, str | None] | None:
        """The feed index `r`/`s` act on and the market key (None: the whole feed), or None."""
        return None

    def cycle_book(self) -> None:
        """`b`: the next book of the screen."""

    def read(self, frame: Frame, book: Book) -> BookView | None:
        return self.oapp.cache.get(frame.stats, book.slot)

    def relayout(self, width: int, height: int) -> None:
        """The terminal changed size."""

    def layout_changed(self) -> None:
        """The app's layout (feeds, books, markets) changed: an attached console saw a new
        host, feed or book (obitui.ui.model.Layout)."""

    def on_screen_resume(self, _event: Any) -> None:
        self.oapp.tick()
