"""Line-API widgets that look up each component style once until their styles change."""
from __future__ import annotations

from rich.style import Style
from textual.widget import Widget


class StyledLines(Widget):
    """A widget whose ``render_line`` reads its component styles through ``style_of``. Textual
    computes a component's rich style anew at every ``get_component_rich_style`` (walking the
    widget's ancestors for the background), and a frame asks for one or more for every line it
    draws (~14 % of the console's CPU with a busy market, issue #20). Here each is computed once
    until the widget's styles change: Textual calls ``notify_style_update`` on a restyle and a
    theme change."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._component_styles_seen: dict[str, Style] = {}

    def style_of(self, name: str) -> Style:
        style = self._component_styles_seen.get(name)
        if style is None:
            style = self._component_styles_seen[name] = self.get_component_rich_style(name)
        return style

    def notify_style_update(self) -> None:
        self._component_styles_seen.clear()
        super().notify_style_update()
