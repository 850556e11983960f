"""Graceful degradation: a missing or full /dev/shm, a taken port, an unknown venue give one clear
error line and a non-zero exit, with nothing left behind (no segment, no simulator)."""
from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.timeout(60)
UID = os.getuid()


def sims() -> set[int]:
    out = set()
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if "obitui" in cmd and "sim" in cmd:
            out.add(p.pid)
    return out


def run(args: list[str], env: dict[str, str] | None = None, preexec=None) -> subprocess.CompletedProcess[str]:  # noqa: ANN001
    return subprocess.run([sys.executable, "-m", "obitui", *args], capture_output=True, text=True, timeout=45,
                          env={**os.environ, **(env or {})}, preexec_fn=preexec)


def one_error_line(res: subprocess.CompletedProcess[str], *words: str) -> None:
    assert res.returncode != 0
    assert "Traceback" not in res.stderr, res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("obitui")]
    assert len(errors) == 1, res.stderr
    for w in words:
        assert w in errors[0], errors[0]


def test_missing_shared_memory_directory(tmp_path: Path) -> None:
    before = sims()
    res = run(["--sim", "--no-ui", "--duration", "3"], env={"OBITUI_SHM_DIR": str(tmp_path / "nope")})
    one_error_line(res, str(tmp_path / "nope"), "No such file or directory", "obitui doctor")
    assert sims() - before == set(), "the simulator was left running"


def _small_files() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def test_shared_memory_that_cannot_hold_the_rings() -> None:
    """A segment that cannot be allocated (here: a file size limit below the 4 MiB rings) fails
    the start with one line; the segments made before it are removed."""
    before = sims()
    shm_before = set(os.listdir("/dev/shm"))
    res = run(["--sim", "--no-ui", "--duration", "3"], preexec=_small_files)
    one_error_line(res, "shared memory", "cannot size segment", "File too large")
    assert set(os.listdir("/dev/shm")) - shm_before == set()
    assert sims() - before == set()


def test_full_tmpfs(tmp_path: Path) -> None:
    """The real thing: a 1 MiB tmpfs as the shared-memory directory (needs mount rights)."""
    mnt = tmp_path / "shm"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=1777", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("this machine does not allow mounting a tmpfs; test_shared_memory_that_cannot_hold_"
                    "the_rings covers the same path with a file size limit")
    try:
        res = run(["--sim", "--no-ui", "--duration", "3"], env={"OBITUI_SHM_DIR": str(mnt)})
        one_error_line(res, "shared memory", "No space left on device", "full?")
        assert os.listdir(mnt) == []
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_simulator_port_taken() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = run(["sim", "--port-base", str(port)])
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [
        f"obitui sim: cannot listen on 127.0.0.1:{port} for binance: Address already in use"]


def test_unknown_venue(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[[feeds]]\nlabel = 'K'\nvenue = 'kraken'\nchannel = 'book'\n")
    res = run(["--config", str(cfg), "--no-ui", "--duration", "2"])
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "obitui: config: feeds[0].venue: unknown venue 'kraken' (known: binance, bitget)"]
