"""The machine a benchmark ran on, as every benchmark's report records it."""
from __future__ import annotations

import os
import platform
import time
from typing import Any


def machine_info() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(),
            "kernel": platform.release(), "date": time.strftime("%Y-%m-%d")}


def machine_line(m: dict[str, Any]) -> str:
    """``machine: <cpu>, N cores, Python x, Linux y, <date>``: the first words of a report."""
    return f"machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, Linux {m['kernel']}, {m['date']}"
