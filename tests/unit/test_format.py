"""The one formatting module the ladder and the headless output share (obitui/widgets/format.py)."""
from __future__ import annotations

import subprocess
import sys

from obitui.widgets.format import decimals_needed, fmt_fixed, shown_decimals


def test_fmt_fixed_writes_exactly_and_never_rounds() -> None:
    assert fmt_fixed(2_700_001_000_000, 8, 2) == "27000.01"
    assert fmt_fixed(150_000_000, 8, 10) == "1.5000000000"        # the exchange's own zeros
    assert fmt_fixed(150_000_001, 8, 2) == "1.50000001"           # cutting digits: all of them
    assert fmt_fixed(5, 2, 0) == "0.05"


def test_decimals_needed_and_shown_decimals() -> None:
    assert [decimals_needed(v, 8) for v in (0, 100_000_000, 150_000_000, 1)] == [0, 0, 1, 8]
    assert shown_decimals([], 8) == 0
    assert shown_decimals([2_700_001_000_000, 2_700_000_000_000, 1_230_000], 8) == 4


def test_the_headless_side_loads_neither_textual_nor_rich() -> None:
    code = ("import sys, obitui.widgets.format\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'rich')))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == "[]", (res.stdout, res.stderr)
