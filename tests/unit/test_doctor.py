"""`obitui doctor` against fake /proc and /sys trees: every branch of every check."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from obitui import doctor
from obitui.doctor import CRITICAL, INFO, OK, WARN, Host

pytestmark = pytest.mark.timeout(60)
MIB = 1 << 20


def tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    (root / "dev/shm").mkdir(parents=True, exist_ok=True)
    return root


TUNED = {
    "/proc/sys/net/ipv4/tcp_fastopen": "3\n",
    "/proc/sys/net/core/rmem_max": "16777216\n",
    "/proc/sys/net/core/wmem_max": "33554432\n",
    "/proc/sys/net/ipv4/tcp_rmem": "4096\t131072\t16777216\n",
    "/proc/sys/net/ipv4/tcp_wmem": "4096\t131072\t16777216\n",
    "/proc/sys/net/core/somaxconn": "4096\n",
    "/proc/sys/net/core/busy_poll": "50\n",
    "/proc/sys/net/core/busy_read": "50\n",
    "/proc/self/limits": "Limit                     Soft Limit           Hard Limit           Units\n"
                         "Max open files            65536                65536                files\n",
    "/sys/devices/system/cpu/online": "0-7\n",
    "/proc/cmdline": "BOOT_IMAGE=/vmlinuz root=/dev/sda1 isolcpus=6,7 nohz_full=6,7\n",
    **{f"/sys/devices/system/cpu/cpu{i}/cpufreq/scaling_governor": "performance\n" for i in range(8)},
    "/sys/kernel/mm/transparent_hugepage/enabled": "always [madvise] never\n",
    "/sys/devices/system/node/node0/cpulist": "0-7\n",
    "/proc/1/cgroup": "0::/init.scope\n",
    "/proc/self/cgroup": "0::/user.slice\n",
}

UNTUNED = {
    "/proc/sys/net/ipv4/tcp_fastopen": "0\n",
    "/proc/sys/net/core/rmem_max": "212992\n",
    "/proc/sys/net/core/wmem_max": "212992\n",
    "/proc/sys/net/ipv4/tcp_rmem": "4096 87380 6291456\n",
    "/proc/sys/net/ipv4/tcp_wmem": "4096 16384 4194304\n",
    "/proc/sys/net/core/somaxconn": "128\n",
    "/proc/sys/net/core/busy_poll": "0\n",
    "/proc/sys/net/core/busy_read": "0\n",
    "/proc/self/limits": "Max open files            1024                 4096                 files\n",
    "/sys/devices/system/cpu/online": "0-1\n",
    "/proc/cmdline": "BOOT_IMAGE=/vmlinuz quiet\n",
    "/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor": "powersave\n",
    "/sys/devices/system/cpu/cpu1/cpufreq/scaling_governor": "schedutil\n",
    "/sys/kernel/mm/transparent_hugepage/enabled": "[always] madvise never\n",
    "/sys/devices/system/node/node0/cpulist": "0\n",
    "/sys/devices/system/node/node1/cpulist": "1\n",
    "/.dockerenv": "",
    "/sys/fs/cgroup/cpu.max": "50000 100000\n",
    "/proc/net/dev": "Inter-|   Receive\n face |bytes\n    lo: 0 0\n  eth0: 1 2\n",
}


class FakeHost(Host):
    def __init__(self, root: Path, free: int = 1 << 34, clock: dict[str, int] | None = None) -> None:
        super().__init__(str(root))
        self.free = free
        self._clock = clock

    def statvfs(self, p: str) -> Any:
        return SimpleNamespace(f_blocks=(1 << 34) // 4096, f_frsize=4096, f_bavail=self.free // 4096)

    def clock(self) -> dict[str, int] | None:
        return self._clock


def by_name(checks: list[doctor.Check]) -> dict[str, doctor.Check]:
    return {c.name: c for c in checks}


def test_a_tuned_bare_host_is_all_ok(tmp_path: Path) -> None:
    host = FakeHost(tree(tmp_path, TUNED), clock={"state": 0, "unsynced": 0, "maxerror_us": 120, "offset_us": -3})
    checks = by_name(doctor.run_checks(host, 20 * MIB, busy_processes=5))
    bad = {n: (c.current, c.severity) for n, c in checks.items()
           if c.severity != OK and n not in ("uvloop",)}
    assert bad == {}, bad
    assert checks["isolated CPUs"].current == "isolcpus=6,7, nohz_full=6,7"
    assert checks["CPUs online"].current == "8"
    assert checks["clock synchronisation"].current.startswith("synchronised, max error 120 us")
    assert checks["container"].current.startswith("none")
    assert checks["/dev/shm free"].current.startswith("16384 MiB free")


def test_an_untuned_container_warns_and_a_small_quota_is_critical(tmp_path: Path) -> None:
    host = FakeHost(tree(tmp_path, UNTUNED), clock={"state": 5, "unsynced": 1, "maxerror_us": 16000000,
                                                   "offset_us": 0})
    checks = by_name(doctor.run_checks(host, 20 * MIB, busy_processes=5))
    sev = {n: c.severity for n, c in checks.items()}
    for name in ("net.ipv4.tcp_fastopen", "net.core.rmem_max", "net.core.wmem_max", "net.ipv4.tcp_rmem",
                 "net.ipv4.tcp_wmem", "open files (soft limit)", "CPUs online", "CPU frequency governor",
                 "transparent huge pages", "NUMA nodes", "clock synchronisation", "container network"):
        assert sev[name] == WARN, (name, checks[name])
    for name in ("net.core.somaxconn", "net.core.busy_poll", "net.core.busy_read", "isolated CPUs", "container"):
        assert sev[name] == INFO, name
    assert sev["container CPU quota"] == CRITICAL and checks["container CPU quota"].current == "0.5 CPUs"
    assert checks["container"].current == "docker"
    assert checks["CPU frequency governor"].current == "powersave,schedutil"
    assert checks["transparent huge pages"].current == "always"
    assert "bridge" in checks["container network"].current
    # every non-ok check says how to fix it
    assert all(c.how and c.why and c.recommended for c in checks.values() if c.severity != OK)
    assert "sysctl -w net.ipv4.tcp_rmem='4096 131072 16777216'" in checks["net.ipv4.tcp_rmem"].how


@pytest.mark.parametrize("files,quota,sev", [
    ({"/sys/fs/cgroup/cpu.max": "max 100000\n"}, "none", OK),
    ({"/sys/fs/cgroup/cpu.max": "300000 100000\n"}, "3 CPUs", WARN),
    ({"/sys/fs/cgroup/cpu.max": "600000 100000\n"}, "6 CPUs", OK),
    ({"/sys/fs/cgroup/cpu/cpu.cfs_quota_us": "-1\n"}, "none", OK),
    ({"/sys/fs/cgroup/cpu/cpu.cfs_quota_us": "150000\n", "/sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000\n"},
     "1.5 CPUs", WARN),
])
def test_container_cpu_quota_v1_and_v2(tmp_path: Path, files: dict[str, str], quota: str, sev: str) -> None:
    host = FakeHost(tree(tmp_path, {"/proc/1/cgroup": "0::/kubepods/besteffort/pod1\n", **files}))
    checks = by_name(doctor.check_container(host, busy_processes=5))
    assert checks["container"].current == "kubepods"
    assert (checks["container CPU quota"].current, checks["container CPU quota"].severity) == (quota, sev)


def test_dev_shm_missing_or_too_small_is_critical(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    c = doctor.check_shm(FakeHost(empty), 20 * MIB)[0]
    assert (c.name, c.current, c.severity) == ("/dev/shm", "missing", CRITICAL)
    root = tree(tmp_path / "t", {})
    assert doctor.check_shm(FakeHost(root, free=10 * MIB), 20 * MIB)[0].severity == CRITICAL
    assert doctor.check_shm(FakeHost(root, free=30 * MIB), 20 * MIB)[0].severity == WARN
    assert doctor.check_shm(FakeHost(root, free=100 * MIB), 20 * MIB)[0].severity == OK


def test_unreadable_files_and_unknown_clock_are_info_not_crashes(tmp_path: Path) -> None:
    root = tree(tmp_path, {"/proc/sys/net/core/rmem_max": "garbage\n", "/sys/devices/system/cpu/online": "x-y\n",
                           "/sys/kernel/mm/transparent_hugepage/enabled": "weird\n"})
    checks = by_name(doctor.run_checks(FakeHost(root, clock=None), 20 * MIB, busy_processes=5))
    for name in ("net.core.rmem_max", "net.ipv4.tcp_fastopen", "open files (soft limit)", "CPUs online",
                 "transparent huge pages", "NUMA nodes", "clock synchronisation", "CPU frequency governor"):
        assert checks[name].severity == INFO, (name, checks[name])
    assert checks["clock synchronisation"].current.startswith("unknown")


def test_clock_with_a_large_error_warns(tmp_path: Path) -> None:
    host = FakeHost(tree(tmp_path, {}), clock={"state": 0, "unsynced": 0, "maxerror_us": 5000, "offset_us": 10})
    assert doctor.check_clock(host)[0].severity == WARN


def test_real_adjtimex_reads_without_privileges() -> None:
    c = doctor._adjtimex()
    assert c is None or set(c) == {"state", "unsynced", "maxerror_us", "offset_us"}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "obitui", "doctor", *args], capture_output=True, text=True,
                          timeout=30, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def test_cli_json_and_exit_codes(tmp_path: Path) -> None:
    res = _cli("--json")
    assert res.returncode in (0, 1), res.stderr
    obj = json.loads(res.stdout)
    names = {c["name"] for c in obj["checks"]}
    assert {"net.ipv4.tcp_fastopen", "net.core.rmem_max", "net.core.wmem_max", "net.ipv4.tcp_rmem",
            "net.ipv4.tcp_wmem", "net.core.somaxconn", "net.core.busy_poll", "net.core.busy_read",
            "open files (soft limit)", "CPUs online", "isolated CPUs", "CPU frequency governor",
            "transparent huge pages", "NUMA nodes", "clock synchronisation", "container", "uvloop",
            "compiled Cython core"} <= names
    assert all(set(c) == {"name", "current", "recommended", "why", "how", "severity"} for c in obj["checks"])
    assert obj["critical"] == sum(c["severity"] == "critical" for c in obj["checks"])
    assert res.returncode == (1 if obj["critical"] else 0)
    # a root without /dev/shm: a critical check, exit code 1, and the text table says so
    res = _cli("--root", str(tmp_path))
    assert res.returncode == 1 and "CRITICAL /dev/shm" in res.stdout and "missing" in res.stdout
    assert "Traceback" not in res.stderr
