"""Prometheus metrics (`--metrics-port`): a collector that reads the stats block, the rings'
counters and the children's CPU/RSS at scrape time. Nothing is recorded on the hot path: a
scrape costs one seqlock read per slot.

Latency histograms are the stats block's log2 buckets (bucket i holds [2**i, 2**(i+1)) ns)
exposed as Prometheus buckets with ``le`` = the bucket's upper bound; their ``_sum`` is estimated
from the buckets' geometric middles (the feeds do not keep exact sums). Both come from the stats
module (``hist_bounds``, ``hist_middle``), which fills the buckets.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import (
    CollectorRegistry, CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric,
)
from prometheus_client.exposition import start_http_server

from obitui.core.stats import FEED_COUNTERS, FEED_GAUGES, FeedState, hist_bounds, hist_middle
from obitui.config import feed_book_ids
from obitui.controller import ProcessSampler, fleet_pids

if TYPE_CHECKING:
    from obitui.supervisor import Supervisor

log = logging.getLogger("obitui.metrics")

HIST_FIRST = 9            # buckets below 2**10 ns (1 us) fold into the first one
HIST_LAST = 34            # 2**35 ns = 34 s; above that: +Inf


def histogram_buckets(counts: list[int]) -> tuple[list[tuple[str, int]], float]:
    """A stats block histogram as Prometheus cumulative buckets (``le`` in seconds, the +Inf one
    last) and the estimated sum in seconds."""
    buckets = []
    acc = 0
    for i, c in enumerate(counts):
        acc += c
        if HIST_FIRST <= i <= HIST_LAST:
            buckets.append((repr(hist_bounds(i)[1] / 1e9), acc))
    buckets.append(("+Inf", sum(counts)))
    return buckets, sum(c * hist_middle(i) for i, c in enumerate(counts)) / 1e9


def _histogram(name: str, doc: str, label: str, series: list[tuple[str, list[int]]]) -> HistogramMetricFamily:
    h = HistogramMetricFamily(name, doc, labels=[label])
    for value, counts in series:
        buckets, est = histogram_buckets(counts)
        h.add_metric([value], buckets, est)
    return h


class StatsCollector:
    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        self.lock = threading.Lock()
        self.closed = False
        self.sampler = ProcessSampler()

    def close(self) -> None:
        with self.lock:
            self.closed = True

    def describe(self) -> list[Metric]:
        return []        # no describe-time collect: the registry must not read the block early

    def collect(self) -> Iterator[Metric]:
        with self.lock:
            if self.closed or self.sup.stats is None:
                return
            yield from self._collect()

    def _collect(self) -> Iterator[Metric]:
        sup = self.sup
        stats = sup.stats
        assert stats is not None
        cfg = sup.cfg
        labels = [f.label for f in cfg.feeds]
        views = [stats.read_feed(i) for i in range(len(cfg.feeds))]
        state = GaugeMetricFamily("obitui_feed_state", "1 for the feed's current state (the state words of docs/ARCHITECTURE.md)",
                                  labels=["feed", "state"])
        age = GaugeMetricFamily("obitui_feed_last_message_age_seconds", "seconds since the last frame",
                                labels=["feed"])
        counters = {name: (GaugeMetricFamily if name in FEED_GAUGES else CounterMetricFamily)(
            f"obitui_feed_{name}", f"feed counter {name}", labels=["feed"]) for name in FEED_COUNTERS}
        lat_er, lat_rp = [], []
        now_ns = time.time_ns()
        for label, v in zip(labels, views):
            if v is None:
                continue
            for st in FeedState:
                state.add_metric([label, st.word], 1.0 if v.state == st else 0.0)
            if v.last_receive_ns:
                age.add_metric([label], max(0.0, (now_ns - v.last_receive_ns) / 1e9))
            for name, fam in counters.items():
                fam.add_metric([label], float(v.counters.get(name, 0)))
            lat_er.append((label, v.hist_exchange_receive))
            lat_rp.append((label, v.hist_receive_push))
        yield state
        yield age
        yield from counters.values()
        yield _histogram("obitui_feed_exchange_receive_latency_seconds",
                         "exchange timestamp to receive (log2 buckets; sum estimated)", "feed", lat_er)
        yield _histogram("obitui_feed_receive_push_latency_seconds",
                         "receive to pushed into the ring (log2 buckets; sum estimated)", "feed", lat_rp)

        fill = GaugeMetricFamily("obitui_ring_fill_ratio", "used bytes / capacity", labels=["feed"])
        hw = GaugeMetricFamily("obitui_ring_high_water_ratio", "highest fill seen by the producer",
                               labels=["feed"])
        drops = CounterMetricFamily("obitui_ring_drops", "records refused because the ring was full",
                                    labels=["feed"])
        lost = CounterMetricFamily("obitui_ring_lost", "records the engine saw missing (seq gaps)",
                                   labels=["feed"])
        for label, m in zip(labels, sup.monitors):
            st = m.stats()
            fill.add_metric([label], m.fill())
            hw.add_metric([label], st["high_water"] / st["capacity"])
            drops.add_metric([label], float(st["drops"]))
            lost.add_metric([label], float(st["lost"]))
        yield from (fill, hw, drops, lost)

        # the NATS publisher (--publish): its slot after the feeds'
        for i in range(len(cfg.feeds), stats.n_feeds):
            pv = stats.read_feed(i)
            if pv is None or not pv.label:
                continue
            c = pv.counters
            up = GaugeMetricFamily("obitui_publisher_connected", "1 while the publisher is connected to NATS",
                                   labels=["publisher"])
            up.add_metric([pv.label], 1.0 if pv.state == FeedState.CONNECTED else 0.0)
            yield up
            for name, key, what in (("messages", "frames", "messages the publisher made"),
                                    ("sent", "frames_pushed", "messages handed to the NATS client"),
                                    ("bytes", "bytes", "bytes handed to the NATS client"),
                                    ("reconnects", "reconnects", "reconnections to the NATS server"),
                                    ("connect_failures", "connect_failures", "first connections that failed"),
                                    ("jetstream_errors", "server_errors",
                                     "JetStream stream set-ups that failed (--publish-jetstream)"),
                                    ("control_requests", "control_commands", "remote control requests")):
                fam = CounterMetricFamily(f"obitui_publisher_{name}", what, labels=["publisher"])
                fam.add_metric([pv.label], float(c.get(key, 0)))
                yield fam
            dropped = CounterMetricFamily("obitui_publisher_dropped", "messages dropped, by reason",
                                          labels=["publisher", "reason"])
            dropped.add_metric([pv.label, "buffer_full"], float(c.get("frames_dropped", 0)))
            dropped.add_metric([pv.label, "not_connected"], float(c.get("frames_discarded", 0)))
            yield dropped

        valid = GaugeMetricFamily("obitui_book_valid", "1 when the engine's book is valid", labels=["book"])
        obi = GaugeMetricFamily("obitui_book_obi", f"order-book imbalance over {cfg.obi_levels} levels",
                                labels=["book"])
        spread = GaugeMetricFamily("obitui_book_spread", "best ask - best bid (price units)", labels=["book"])
        mid = GaugeMetricFamily("obitui_book_mid", "(best bid + best ask) / 2 (price units)", labels=["book"])
        uid = GaugeMetricFamily("obitui_book_update_id", "last applied update id / seq", labels=["book"])
        inval = CounterMetricFamily("obitui_book_invalidations", "times the book was marked invalid",
                                    labels=["book"])
        lat_re = []
        markets: dict[str, tuple[int, int]] = {}        # book market -> (slot, price digits)
        for f, ids in zip(cfg.feeds, feed_book_ids(cfg.feeds)):
            if f.is_book:
                for key, j in zip(f.book_keys, ids):
                    markets.setdefault(key, (j, f.scales_of(key.split(":", 1)[1])[0]))
        for key, (j, digits) in sorted(markets.items(), key=lambda kv: kv[1][0]):
            bv = stats.read_book(j) if j < stats.n_books else None
            if bv is None:
                continue
            valid.add_metric([key], 1.0 if bv.valid else 0.0)
            obi.add_metric([key], bv.obi)
            uid.add_metric([key], float(bv.update_id))
            inval.add_metric([key], float(bv.invalidations))
            if bv.valid and bv.bids and bv.asks:
                bb, ba = bv.bids[0][0], bv.asks[0][0]
                spread.add_metric([key], (ba - bb) / 10 ** digits)
                mid.add_metric([key], (ba + bb) / 2 / 10 ** digits)
            lat_re.append((key, bv.hist_ring_engine))
        yield from (valid, obi, spread, mid, uid, inval)
        yield _histogram("obitui_book_receive_applied_latency_seconds",
                         "feed receive to applied by the engine (log2 buckets; sum estimated)", "book", lat_re)

        ev = stats.read_engine()
        if ev is not None:
            yield CounterMetricFamily("obitui_engine_records", "records applied by the engine", value=ev.records)
            yield GaugeMetricFamily("obitui_engine_records_per_second", "engine records/s", value=ev.records_per_s)
            yield CounterMetricFamily("obitui_engine_gaps", "seq gaps the engine saw", value=ev.gaps)

        cpu = GaugeMetricFamily("obitui_process_cpu_percent", "CPU % of one core since the previous scrape",
                                labels=["process"])
        rss = GaugeMetricFamily("obitui_process_rss_bytes", "resident memory", labels=["process"])
        restarts = GaugeMetricFamily("obitui_process_restarts", "restarts in the current backoff window",
                                     labels=["process"])
        for ps in self.sampler.sample(fleet_pids(sup)):
            if ps.cpu is not None:
                cpu.add_metric([ps.name], ps.cpu)
                rss.add_metric([ps.name], float(ps.rss))
        for c in sup.children:
            restarts.add_metric([c.name], float(c.restarts))
        yield from (cpu, rss, restarts)


class MetricsServer:
    def __init__(self, sup: Supervisor, host: str, port: int) -> None:
        self.collector = StatsCollector(sup)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)
        self.httpd, self.thread = start_http_server(port, addr=host, registry=self.registry)
        self.host = host
        self.port = self.httpd.server_address[1]
        log.info("metrics on http://%s:%d/metrics", host, self.port)

    def close(self) -> None:
        self.collector.close()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(2)
