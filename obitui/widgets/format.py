"""Number formatting shared by the UI widgets and the headless output: fixed-point prices and
quantities as decimal text. No Textual or Rich here: headless mode imports this module and must
not load the UI (tests/ui/test_app.py::test_hot_path_never_imports_the_ui)."""
from __future__ import annotations

from obitui.core.fixed import format_fixed


def fmt_fixed(value: int, digits: int, decimals: int) -> str:
    """``value`` (fixed point, ``digits`` decimals) written with ``decimals`` decimals (more
    than ``digits`` pads with zeros, as the exchange wrote them); if that would cut non-zero
    digits, with all ``digits`` instead: a figure is never rounded for display."""
    try:
        return format_fixed(value, digits, decimals)
    except ValueError:
        return format_fixed(value, digits, digits)


def decimals_needed(value: int, digits: int) -> int:
    """The fewest decimals that write ``value`` (fixed point, ``digits`` decimals) exactly."""
    d = digits
    while d > 0 and value % 10 == 0:
        value //= 10
        d -= 1
    return d


def shown_decimals(values: list[int], digits: int) -> int:
    """The fewest decimals that write every value exactly (at least 0)."""
    return max((decimals_needed(v, digits) for v in values), default=0)


LOCAL = "local"         # the host column of this machine's own fleet (beside remote ones)


def feed_name(label: str) -> str:
    """A remote feed's label without its host (``alpha/Bi-OB`` -> ``Bi-OB``)."""
    return label.rpartition("/")[2]


def fit_words(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters, cut at a word boundary (never mid-word), with
    '…' when something was left out."""
    if len(text) <= width:
        return text
    if width <= 1:
        return "…"[:width]
    cut = text[:width - 1]
    sp = cut.rfind(" ")
    if sp > 0:
        cut = cut[:sp]
    return cut.rstrip(" :,;") + "…"


def fit_parts(text: str, width: int) -> str:
    """``text`` made of parts two spaces apart, in at most ``width`` characters: the last parts
    left out whole (a single part too long: cut at a word, see ``fit_words``)."""
    if len(text) <= width:
        return text
    parts = text.split("  ")
    while len(parts) > 1 and len("  ".join(parts)) > width:
        parts.pop()
    return fit_words("  ".join(parts), width)
