"""Small statistics helpers shared by the benchmarks."""
from __future__ import annotations

import statistics
from collections.abc import Sequence


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values; q in [0, 100]."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, int(round(q / 100.0 * len(sorted_values) + 0.5)) - 1))
    return float(sorted_values[k])


def latency_summary(values_ns: Sequence[int]) -> dict[str, float]:
    """p50/p99/p99.9/max in microseconds."""
    v = sorted(values_ns)
    return {
        "p50_us": percentile(v, 50) / 1e3,
        "p99_us": percentile(v, 99) / 1e3,
        "p999_us": percentile(v, 99.9) / 1e3,
        "max_us": (v[-1] / 1e3) if v else float("nan"),
        "n": len(v),
    }


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")
