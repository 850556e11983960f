"""Graceful degradation: a missing or full /dev/shm, a taken port, an unknown venue give one clear
error line and a non-zero exit, with nothing left behind (no segment, no simulator).

Only what the test's own obitui run made is counted: the processes that descend from it (found
through a child subreaper, so one orphaned or in a session of its own is found too) and the
segments named after its pid. Another obitui on the host cannot make these tests fail or pass."""
from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.integration.procs import Reaped, run_reaped, run_segments

pytestmark = pytest.mark.timeout(60)
UID = os.getuid()


def run(args: list[str], env: dict[str, str] | None = None, preexec=None) -> Reaped:  # noqa: ANN001
    """``obitui ARGS`` to the end; what it left running is in ``.left`` (and was killed)."""
    with tempfile.TemporaryDirectory() as d:
        return run_reaped(args, env=env, preexec=preexec, timeout=45, report_dir=Path(d))


def nothing_left(r: Reaped, shm_dir: str | os.PathLike[str] = "/dev/shm") -> None:
    assert r.left == [], f"processes of the run were left running: {r.left}"
    assert run_segments(r.pid, shm_dir) == [], f"segments of the run were left: {run_segments(r.pid, shm_dir)}"


def one_error_line(res: subprocess.CompletedProcess[str], *words: str) -> None:
    assert res.returncode != 0
    assert "Traceback" not in res.stderr, res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("obitui")]
    assert len(errors) == 1, res.stderr
    for w in words:
        assert w in errors[0], errors[0]


def test_missing_shared_memory_directory(tmp_path: Path) -> None:
    r = run(["--sim", "--no-ui", "--duration", "3"], env={"OBITUI_SHM_DIR": str(tmp_path / "nope")})
    one_error_line(r.res, str(tmp_path / "nope"), "No such file or directory", "obitui doctor")
    nothing_left(r)
    assert not (tmp_path / "nope").exists()


def _small_files() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def test_shared_memory_that_cannot_hold_the_rings() -> None:
    """A segment that cannot be allocated (here: a file size limit below the 4 MiB rings) fails
    the start with one line; the segments made before it are removed."""
    r = run(["--sim", "--no-ui", "--duration", "3"], preexec=_small_files)
    one_error_line(r.res, "shared memory", "cannot size segment", "File too large")
    nothing_left(r)


def test_full_tmpfs(tmp_path: Path) -> None:
    """The real thing: a 1 MiB tmpfs as the shared-memory directory (needs mount rights)."""
    mnt = tmp_path / "shm"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=1777", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("this machine does not allow mounting a tmpfs; test_shared_memory_that_cannot_hold_"
                    "the_rings covers the same path with a file size limit")
    try:
        r = run(["--sim", "--no-ui", "--duration", "3"], env={"OBITUI_SHM_DIR": str(mnt)})
        one_error_line(r.res, "shared memory", "No space left on device", "full?")
        nothing_left(r, mnt)
        assert os.listdir(mnt) == []     # the test's own tmpfs: nothing else writes there
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_simulator_port_taken() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = run(["sim", "--port-base", str(port)])
    assert r.res.returncode != 0 and "Traceback" not in r.res.stderr
    assert r.res.stderr.strip().splitlines() == [
        f"obitui sim: cannot listen on 127.0.0.1:{port} for binance: Address already in use"]
    assert r.left == []


def test_unknown_venue(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[[feeds]]\nlabel = 'K'\nvenue = 'kraken'\nchannel = 'book'\n")
    r = run(["--config", str(cfg), "--no-ui", "--duration", "2"])
    assert r.res.returncode == 2
    assert r.res.stderr.strip().splitlines() == [
        "obitui: config: feeds[0].venue: unknown venue 'kraken' (known: binance, binance-usdm, bitget, bitget-v3)"]
    nothing_left(r)
