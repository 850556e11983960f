"""The machine a benchmark ran on, as every benchmark's report records it."""
from __future__ import annotations

import json
import os
import platform
import sys
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


def bench_result(name: str, argv: list[str] | None, **fields: Any) -> dict[str, Any]:
    """What a benchmark writes with ``--json``: the machine, the command as it was typed
    (``obitui bench <name> ...``), then ``fields``."""
    return {"machine": machine_info(),
            "command": " ".join([f"obitui bench {name}", *(sys.argv[3:] if argv is None else argv)]),
            **fields}


def publish_result(result: dict[str, Any], json_path: str | None, setup: str) -> None:
    """``result`` into ``json_path`` (when given), then the report's first line: the machine
    and the benchmark's ``setup``."""
    if json_path:
        with open(json_path, "w") as f:
            json.dump(result, f, indent=1)
    print(machine_line(result["machine"]) + "; " + setup)
