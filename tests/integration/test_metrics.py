"""`--metrics-port`: a real scrape over loopback of a running fleet, parsed as Prometheus text."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.timeout(90)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[str, dict[tuple, float]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        assert r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    out: dict[str, dict[tuple, float]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def test_scrape_of_a_running_fleet() -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "obitui", "--sim", "--no-ui", "--json", "--duration", "30",
                             "--metrics-port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        want = {"Bi-OB": "connected_synced", "Bi-TR": "connected", "Bg-OB": "connected_synced", "Bg-PR": "live"}
        for line in proc.stdout:  # type: ignore[union-attr]
            obj = json.loads(line)
            if all(obj["feeds"].get(k, {}).get("state") == v for k, v in want.items()) and \
                    all(b["valid"] for b in obj["books"].values()):
                break
        time.sleep(1.0)
        m = scrape(port)
        for label, st in want.items():
            assert m["obitui_feed_state"][(("feed", label), ("state", st))] == 1.0
            assert m["obitui_feed_state"][(("feed", label), ("state", "backoff"))] == 0.0
            assert m["obitui_feed_frames_total"][(("feed", label),)] > 0
            assert (("feed", label),) in m["obitui_ring_fill_ratio"]
            assert 0.0 <= m["obitui_ring_high_water_ratio"][(("feed", label),)] <= 1.0
            assert m["obitui_ring_drops_total"][(("feed", label),)] == 0.0
        for book in ("binance:BTCUSDT", "bitget:BTCUSDT"):
            assert m["obitui_book_valid"][(("book", book),)] == 1.0
            assert -1.0 <= m["obitui_book_obi"][(("book", book),)] <= 1.0
            assert m["obitui_book_spread"][(("book", book),)] > 0
            assert m["obitui_book_receive_applied_latency_seconds_count"][(("book", book),)] > 0
        # histogram buckets are cumulative and end at the count
        h = {k: v for k, v in m["obitui_feed_receive_push_latency_seconds_bucket"].items() if ("feed", "Bi-OB") in k}
        ordered = sorted(h.items(), key=lambda kv: float(dict(kv[0])["le"]))
        assert [v for _, v in ordered] == sorted(v for _, v in ordered)
        assert ordered[-1][1] == m["obitui_feed_receive_push_latency_seconds_count"][(("feed", "Bi-OB"),)]
        assert m["obitui_engine_records_total"][()] > 0
        for name in ("Bi-OB", "Bi-TR", "Bg-OB", "Bg-PR", "engine", "simulator"):
            assert m["obitui_process_rss_bytes"][(("process", name),)] > 1e6
        # a second scrape sees the counters grow
        time.sleep(1.0)
        m2 = scrape(port)
        assert m2["obitui_feed_frames_total"][(("feed", "Bi-OB"),)] > m["obitui_feed_frames_total"][(("feed", "Bi-OB"),)]
    finally:
        proc.terminate()
        proc.wait(20)
    err = proc.stderr.read()  # type: ignore[union-attr]
    assert "Traceback" not in err
    assert f"metrics on http://127.0.0.1:{port}/metrics" in err


def test_metrics_port_taken_is_one_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = subprocess.run([sys.executable, "-m", "obitui", "--sim", "--no-ui", "--duration", "5",
                              "--metrics-port", str(port)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    assert f"metrics endpoint 127.0.0.1:{port}" in res.stderr and "Traceback" not in res.stderr
