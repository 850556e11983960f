"""The Prometheus histograms (metrics.py) read the stats block's log2 buckets with the stats
module's own bounds and middles: one definition, the same figures on both sides."""
from __future__ import annotations

import pytest

from obitui.core.stats import HIST_BUCKETS, hist_bounds, hist_bucket, hist_middle, hist_quantile
from obitui.metrics import HIST_FIRST, HIST_LAST, histogram_buckets


def test_bounds_are_what_hist_bucket_fills() -> None:
    for i in range(HIST_BUCKETS):
        low, high = hist_bounds(i)
        assert hist_bucket(max(low, 1)) == i
        if high != float("inf"):
            assert hist_bucket(int(high) - 1) == i and hist_bucket(int(high)) == i + 1
            assert hist_bounds(i + 1)[0] == high
        assert low <= hist_middle(i) < high
    assert hist_bucket(0) == 0 and hist_bounds(0)[0] == 0
    assert hist_bounds(HIST_BUCKETS - 1)[1] == float("inf")


@pytest.mark.parametrize("ns", [1, 700, 1_000, 1_024, 5_000, 123_456, 2**20 + 1, 10**9, 3 * 10**10, 2**40])
def test_one_latency_reads_the_same_in_metrics_and_stats(ns: int) -> None:
    counts = [0] * HIST_BUCKETS
    i = hist_bucket(ns)
    counts[i] = 1
    buckets, total = histogram_buckets(counts)
    assert buckets[-1] == ("+Inf", 1)
    # the estimated sum is the bucket's middle, as the stats module's quantiles are
    assert total == hist_middle(i) / 1e9 == hist_quantile(counts, 0.5) / 1e9
    # the first cumulative bucket holding the sample is the one whose le is the sample's
    # bucket's upper bound (buckets below HIST_FIRST fold into the first, above HIST_LAST +Inf)
    first = next(le for le, acc in buckets if acc == 1)
    if i < HIST_FIRST:
        assert first == repr(hist_bounds(HIST_FIRST)[1] / 1e9)
    elif i > HIST_LAST:
        assert first == "+Inf"
    else:
        assert first == repr(hist_bounds(i)[1] / 1e9)
        assert float(first) * 1e9 > ns >= hist_bounds(i)[0]


def test_buckets_are_cumulative_with_the_stats_bounds() -> None:
    counts = [k % 3 for k in range(HIST_BUCKETS)]
    buckets, total = histogram_buckets(counts)
    les = [le for le, _ in buckets[:-1]]
    assert les == [repr(hist_bounds(i)[1] / 1e9) for i in range(HIST_FIRST, HIST_LAST + 1)]
    cum = [acc for _, acc in buckets]
    assert cum == sorted(cum) and cum[-1] == sum(counts)
    assert cum[0] == sum(counts[:HIST_FIRST + 1])
    assert total == pytest.approx(sum(c * hist_middle(i) for i, c in enumerate(counts)) / 1e9)
