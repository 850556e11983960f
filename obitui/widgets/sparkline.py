"""OBI sparkline of one book: the last samples as block characters, coloured by sign, with the
current value (line API)."""
from __future__ import annotations

from rich.segment import Segment
from textual.strip import Strip

from obitui.widgets.styled import StyledLines

BLOCKS = "▁▂▃▄▅▆▇█"


class ObiSparkline(StyledLines):
    COMPONENT_CLASSES = {"spark--pos", "spark--neg", "spark--label"}
    DEFAULT_CSS = """
    ObiSparkline { height: 2; }
    ObiSparkline > .spark--pos { color: $success; }
    ObiSparkline > .spark--neg { color: $error; }
    ObiSparkline > .spark--label { color: $text-muted; }
    """

    def __init__(self, key: str, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.key = key
        self.values: list[float] = []
        self.current = 0.0
        self.valid = False
        self._drawn: tuple[object, ...] | None = None     # (key, values, current, valid) on screen

    def show(self, values: list[float], current: float, valid: bool) -> None:
        drawn = (self.key, values, current, valid)
        if drawn == self._drawn:
            return              # on screen already
        self._drawn = drawn
        self.values = values
        self.current = current
        self.valid = valid
        self.refresh()

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        pos = self.style_of("spark--pos")
        neg = self.style_of("spark--neg")
        if y == 0:
            label = self.style_of("spark--label")
            value = f"{self.current:+.4f}" if self.valid else "  n/a "
            return Strip([Segment(f" OBI {self.key} ", label),
                          Segment(value, pos if self.current >= 0 else neg)]).crop(0, width)
        if y > 1:
            return Strip.blank(width)
        vals = self.values[-width:]
        segs = []
        for v in vals:
            v = max(-1.0, min(1.0, v))
            idx = min(len(BLOCKS) - 1, int((v + 1.0) / 2.0 * len(BLOCKS)))
            segs.append(Segment(BLOCKS[idx], pos if v >= 0 else neg))
        pad = width - len(vals)
        return Strip([Segment(" " * pad)] + segs if pad > 0 else segs).crop(0, width)
