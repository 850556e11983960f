"""F1: every key of the app and of the screen under it."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 70; max-width: 100%; height: auto; max-height: 100%;
        border: round $accent; background: $panel; padding: 0 1;
    }
    """
    BINDINGS = [Binding("escape,q,f1,question_mark", "dismiss", "Close", id="help.close")]

    def __init__(self, sections: list[tuple[str, list[Binding]]]) -> None:
        super().__init__()
        self.sections = sections

    def compose(self) -> ComposeResult:
        rows = ["[b]obitui keys[/b]"]
        for title, bindings in self.sections:
            if not bindings:
                continue
            rows += ["", f"[b]{title}[/b]"]
            for b in bindings:
                key = b.key_display or b.key.split(",")[0]
                rows.append(f"  [b]{key:<9}[/b] {b.description}")
        rows += ["", "The display reads the stats block only; pausing it never stops the data.",
                 "Esc closes this help."]
        yield VerticalScroll(Static("\n".join(rows)))
