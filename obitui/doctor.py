"""`obitui doctor`: where this host stands for low-latency market data (read-only).

Every check reads /proc, /sys or a syscall and never changes anything. Each result says what
is, what we recommend, why (one line), how to apply it (the exact command or config line) and
how much it matters. Exit code 1 when a critical check fails.

``--root DIR`` reads /proc, /sys, /dev/shm and the container markers under DIR instead of /:
the tests run the doctor against fake trees so that every branch is covered.
"""
from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import importlib.util
import json
import os
import re
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

OK, INFO, WARN, CRITICAL = "ok", "info", "warn", "critical"
_ORDER = {CRITICAL: 0, WARN: 1, INFO: 2, OK: 3}
MIB = 1 << 20
SOCKET_BUFFER = 16 * MIB
SYSCTL_FILE = "/etc/sysctl.d/90-obitui.conf"


@dataclass
class Check:
    name: str
    current: str
    recommended: str
    why: str
    how: str
    severity: str


class Host:
    """The machine as the doctor sees it; tests pass a fake ``root`` (and may override the
    two things that are syscalls rather than files: ``statvfs`` and ``clock``)."""

    def __init__(self, root: str = "/") -> None:
        self.root = Path(root)

    def path(self, p: str) -> Path:
        return self.root / p.lstrip("/")

    def read(self, p: str) -> str | None:
        try:
            return self.path(p).read_text().strip()
        except (OSError, UnicodeDecodeError):
            return None

    def exists(self, p: str) -> bool:
        return self.path(p).exists()

    def listdir(self, p: str) -> list[str]:
        try:
            return sorted(os.listdir(self.path(p)))
        except OSError:
            return []

    def statvfs(self, p: str) -> os.statvfs_result | None:
        try:
            return os.statvfs(self.path(p))
        except OSError:
            return None

    def clock(self) -> dict[str, int] | None:
        """adjtimex(2) read-only: {'state', 'unsynced', 'maxerror_us', 'offset_us'}."""
        return _adjtimex()


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):
    _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
                ("constant", ctypes.c_long), ("precision", ctypes.c_long),
                ("tolerance", ctypes.c_long), ("time", _Timeval), ("tick", ctypes.c_long),
                ("ppsfreq", ctypes.c_long), ("jitter", ctypes.c_long), ("shift", ctypes.c_int),
                ("stabil", ctypes.c_long), ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long),
                ("errcnt", ctypes.c_long), ("stbcnt", ctypes.c_long), ("tai", ctypes.c_int),
                ("_pad", ctypes.c_int * 11)]


STA_UNSYNC = 0x0040
STA_NANO = 0x2000
TIME_ERROR = 5


def _adjtimex() -> dict[str, int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        tx = _Timex()          # modes = 0: read only, allowed for any user
        state = libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    offset_us = tx.offset // 1000 if tx.status & STA_NANO else tx.offset
    return {"state": state, "unsynced": int(bool(tx.status & STA_UNSYNC) or state == TIME_ERROR),
            "maxerror_us": int(tx.maxerror), "offset_us": int(offset_us)}


# ---------------------------------------------------------------- the checks
def _sysctl_int(host: Host, key: str) -> int | None:
    text = host.read("/proc/sys/" + key.replace(".", "/"))
    try:
        return int(text.split()[0]) if text else None
    except ValueError:
        return None


def _persist(key: str, value: str) -> str:
    return (f"sudo sysctl -w {key}={shlex.quote(value)}; "
            f"echo '{key} = {value}' | sudo tee -a {SYSCTL_FILE}")


def check_sysctls(host: Host) -> list[Check]:
    out = []
    v = _sysctl_int(host, "net.ipv4.tcp_fastopen")
    out.append(Check("net.ipv4.tcp_fastopen", "unreadable" if v is None else str(v), "1 or 3 (bit 0: client side)",
                     "TCP Fast Open sends data in the SYN: one round trip less on every reconnect",
                     _persist("net.ipv4.tcp_fastopen", "3"),
                     INFO if v is None else (OK if v is not None and v & 1 else WARN)))
    for key in ("net.core.rmem_max", "net.core.wmem_max"):
        v = _sysctl_int(host, key)
        out.append(Check(key, "unreadable" if v is None else str(v), f">= {SOCKET_BUFFER}",
                         "caps the socket buffer a burst can fill before the kernel drops or "
                         "throttles (a depth burst after a reconnect is MiBs)",
                         _persist(key, str(SOCKET_BUFFER)),
                         INFO if v is None else (OK if v >= SOCKET_BUFFER else WARN)))
    for key in ("net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"):
        text = host.read("/proc/sys/" + key.replace(".", "/"))
        parts = text.split() if text else []
        mx = int(parts[2]) if len(parts) == 3 and parts[2].isdigit() else None
        want = f"4096 131072 {SOCKET_BUFFER}"
        out.append(Check(key, " ".join(parts) if parts else "unreadable", f"max >= {SOCKET_BUFFER} ({want})",
                         "the TCP autotuning ceiling per socket: a small one throttles a fast stream",
                         _persist(key, want),
                         INFO if mx is None else (OK if mx >= SOCKET_BUFFER else WARN)))
    v = _sysctl_int(host, "net.core.somaxconn")
    out.append(Check("net.core.somaxconn", "unreadable" if v is None else str(v), ">= 1024",
                     "listen backlog of the simulator and the metrics endpoint under reconnect storms",
                     _persist("net.core.somaxconn", "1024"),
                     INFO if v is None else (OK if v >= 1024 else INFO)))
    for key in ("net.core.busy_poll", "net.core.busy_read"):
        v = _sysctl_int(host, key)
        out.append(Check(key, "unreadable" if v is None else str(v), "50 (us) on hosts with cores to spare",
                         "busy polling the NIC queue trades a core for microseconds of receive latency",
                         _persist(key, "50"), INFO if not v else OK))
    return out


def check_limits(host: Host) -> list[Check]:
    text = host.read("/proc/self/limits") or ""
    m = re.search(r"^Max open files\s+(\S+)\s+(\S+)", text, re.M)
    soft = m.group(1) if m else None
    n = None if soft is None else (1 << 62 if soft == "unlimited" else int(soft))
    return [Check("open files (soft limit)", soft or "unreadable", ">= 4096",
                  "every feed holds sockets, the supervisor pipes and segments; 1024 runs out with "
                  "many streams",
                  "ulimit -n 65536 (or LimitNOFILE=65536 in the systemd unit)",
                  INFO if n is None else (OK if n >= 4096 else WARN))]


def _cpu_list(text: str | None) -> list[int]:
    cpus: list[int] = []
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        a, _, b = part.partition("-")
        try:
            cpus += list(range(int(a), int(b or a) + 1))
        except ValueError:
            return []
    return cpus


def check_cpus(host: Host, busy_processes: int) -> list[Check]:
    out = []
    cpus = _cpu_list(host.read("/sys/devices/system/cpu/online"))
    n = len(cpus)
    sev = INFO if not n else (OK if n >= busy_processes + 1 else WARN)
    out.append(Check("CPUs online", str(n) if n else "unreadable", f">= {busy_processes + 1} for pinning "
                     f"({busy_processes} busy processes + the UI/OS)",
                     "with fewer cores than busy processes they preempt each other: p99 latency "
                     "becomes a scheduler time slice",
                     "use engine.wait = 'block' (the default) on small hosts; `spin` and pinning "
                     "only with a core per busy process (docs/OPERATING.md)", sev))
    cmdline = host.read("/proc/cmdline") or ""
    iso = re.search(r"\bisolcpus=(\S+)", cmdline)
    nohz = re.search(r"\bnohz_full=(\S+)", cmdline)
    cur = ", ".join(x for x in (iso and f"isolcpus={iso.group(1)}", nohz and f"nohz_full={nohz.group(1)}") if x)
    out.append(Check("isolated CPUs", cur or "none", "isolcpus=/nohz_full= for the engine's core on hosts "
                     "with >= 4 cores",
                     "an isolated core runs only what is pinned to it: no other task preempts the engine",
                     "add `isolcpus=3 nohz_full=3` to GRUB_CMDLINE_LINUX, update-grub, reboot; then "
                     "[engine] cpu = 3 in the config", OK if iso or nohz else INFO))
    govs = {}
    for c in cpus or [0]:
        g = host.read(f"/sys/devices/system/cpu/cpu{c}/cpufreq/scaling_governor")
        if g:
            govs[c] = g
    if not govs:
        out.append(Check("CPU frequency governor", "not exposed (VM or fixed frequency)", "performance",
                         "a power-saving governor ramps the clock after a burst starts",
                         "nothing to do when the host does not expose cpufreq", INFO))
    else:
        kinds = sorted(set(govs.values()))
        out.append(Check("CPU frequency governor", ",".join(kinds), "performance",
                         "a power-saving governor ramps the clock after a burst starts: the first "
                         "messages of a burst pay for it",
                         "sudo cpupower frequency-set -g performance",
                         OK if kinds == ["performance"] else WARN))
    thp = host.read("/sys/kernel/mm/transparent_hugepage/enabled")
    mode = re.search(r"\[(\w+)\]", thp or "")
    m = mode.group(1) if mode else None
    out.append(Check("transparent huge pages", m or "unreadable", "madvise (or never)",
                     "`always` lets khugepaged compact memory behind the hot path: multi-ms stalls",
                     "echo madvise | sudo tee /sys/kernel/mm/transparent_hugepage/enabled",
                     INFO if m is None else (WARN if m == "always" else OK)))
    nodes = [d for d in host.listdir("/sys/devices/system/node") if re.fullmatch(r"node\d+", d)]
    out.append(Check("NUMA nodes", str(len(nodes)) if nodes else "unreadable", "1, or every obitui process "
                     "on one node",
                     "a ring read across nodes costs a remote memory access per cache line",
                     "numactl --cpunodebind=0 --membind=0 obitui ... (and pin CPUs of that node)",
                     INFO if not nodes else (OK if len(nodes) == 1 else WARN)))
    return out


def check_shm(host: Host, need_bytes: int) -> list[Check]:
    if not host.path("/dev/shm").is_dir():
        return [Check("/dev/shm", "missing", f">= {need_bytes // MIB + 1} MiB free tmpfs",
                      "the rings and the stats block live in POSIX shared memory: nothing runs without it",
                      "mount -t tmpfs -o size=256m tmpfs /dev/shm (containers: --ipc=host or --shm-size=256m)",
                      CRITICAL)]
    st = host.statvfs("/dev/shm")
    if st is None:
        return [Check("/dev/shm", "unreadable", f">= {need_bytes // MIB + 1} MiB free", "cannot stat it",
                      "check the mount", WARN)]
    size = st.f_blocks * st.f_frsize
    free = st.f_bavail * st.f_frsize
    sev = CRITICAL if free < need_bytes else (WARN if free < 2 * need_bytes else OK)
    return [Check("/dev/shm free", f"{free // MIB} MiB free of {size // MIB} MiB",
                  f">= {2 * need_bytes // MIB + 1} MiB (the configured rings need {need_bytes // MIB + 1} MiB)",
                  "segments are allocated at start; too little space fails the start (never a SIGBUS later)",
                  "sudo mount -o remount,size=1g /dev/shm (containers: --shm-size=1g or --ipc=host)", sev)]


def check_clock(host: Host) -> list[Check]:
    c = host.clock()
    if c is None:
        return [Check("clock synchronisation", "unknown (adjtimex unavailable)", "synchronised, error < 1 ms",
                      "exchange->receive latency is our clock minus theirs",
                      "run chrony or systemd-timesyncd", INFO)]
    if c["unsynced"]:
        return [Check("clock synchronisation", "not synchronised", "synchronised, error < 1 ms",
                      "exchange->receive latency is our clock minus the exchange's: an unsynchronised "
                      "clock makes that figure meaningless",
                      "sudo apt install chrony && sudo systemctl enable --now chrony", WARN)]
    err = c["maxerror_us"]
    return [Check("clock synchronisation", f"synchronised, max error {err} us, offset {c['offset_us']} us",
                  "max error < 1000 us",
                  "exchange->receive latency is only as good as the clock",
                  "chrony with a nearby server (`server <ntp> iburst` in /etc/chrony/chrony.conf)",
                  OK if err < 1000 else WARN)]


def _container(host: Host) -> str | None:
    if host.exists("/.dockerenv"):
        return "docker"
    if host.exists("/run/.containerenv"):
        return "podman"
    cg = (host.read("/proc/1/cgroup") or "") + (host.read("/proc/self/cgroup") or "")
    for word in ("kubepods", "docker", "containerd", "lxc", "libpod"):
        if word in cg:
            return word
    return None


def _cpu_quota(host: Host) -> float | None:
    v2 = host.read("/sys/fs/cgroup/cpu.max")
    if v2:
        quota, _, period = v2.partition(" ")
        if quota == "max":
            return None
        try:
            return int(quota) / int(period or 100000)
        except ValueError:
            return None
    q = host.read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") or host.read("/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us")
    p = host.read("/sys/fs/cgroup/cpu/cpu.cfs_period_us") or host.read("/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us")
    try:
        if q is None or int(q) <= 0:
            return None
        return int(q) / int(p or 100000)
    except ValueError:
        return None


def check_container(host: Host, busy_processes: int) -> list[Check]:
    kind = _container(host)
    if kind is None:
        return [Check("container", "none (bare host or VM)", "-", "containers add a CPU quota and NAT "
                      "unless configured", "-", OK)]
    out = [Check("container", kind, "host network, host IPC, no CPU quota below one core per busy process",
                 "running in a container: its CPU quota and network mode decide the latency",
                 "docker run --network host --ipc host ... (docs/OPERATING.md, Containers)", INFO)]
    quota = _cpu_quota(host)
    if quota is None:
        out.append(Check("container CPU quota", "none", f">= {busy_processes} CPUs or none", "-", "-", OK))
    else:
        sev = CRITICAL if quota < 1 else (WARN if quota < busy_processes else OK)
        out.append(Check("container CPU quota", f"{quota:g} CPUs", f">= {busy_processes} CPUs or none",
                         "CFS throttling stops every process of the container for the rest of a 100 ms "
                         "period once the quota is spent: a throttled feed is 10-100 ms late",
                         "docker run --cpus <n> with n >= the busy processes, or no --cpus", sev))
    ifaces = []
    for line in (host.read("/proc/net/dev") or "").splitlines()[2:]:
        name = line.split(":", 1)[0].strip()
        if name:
            ifaces.append(name)
    bridge = bool(ifaces) and set(ifaces) <= {"lo", "eth0"}
    out.append(Check("container network", ("bridge (only lo and eth0: NAT through docker0)" if bridge
                                           else f"host-like ({len(ifaces)} interfaces)") if ifaces
                     else "unreadable",
                     "host network", "a bridge adds NAT and a veth hop to every packet",
                     "docker run --network host ...", WARN if bridge else (INFO if not ifaces else OK)))
    return out


def check_software() -> list[Check]:
    out = []
    has_uvloop = importlib.util.find_spec("uvloop") is not None
    out.append(Check("uvloop", "installed" if has_uvloop else "not installed", "installed",
                     "the feeds' event loop: uvloop parses and dispatches frames faster than asyncio's",
                     "pip install 'obitui[fast]' (or pip install uvloop)", OK if has_uvloop else INFO))
    try:
        import obitui.core.ring as ring_mod
        compiled = str(getattr(ring_mod, "__file__", "")).endswith((".so", ".pyd"))
        where = getattr(ring_mod, "__file__", "?")
    except ImportError as exc:
        compiled, where = False, f"import failed: {exc}"
    out.append(Check("compiled Cython core", f"loaded ({Path(where).name})" if compiled else f"missing ({where})",
                     "loaded", "rings, books and fixed point are Cython: without them nothing runs",
                     "pip install -e . (rebuilds the extensions; needs gcc and Python headers)",
                     OK if compiled else CRITICAL))
    return out


def check_log() -> list[Check]:
    """Where the UI's log file is and how large (a fact to show, never a problem)."""
    from obitui.logs import ROTATE_BYTES, ROTATE_KEEP, ui_log_path
    p = ui_log_path()
    try:
        size = f"{p.stat().st_size / MIB:.1f} MiB"
    except OSError:
        size = "not written yet"
    return [Check("UI log file", f"{p} ({size})", f"rotated past {ROTATE_BYTES // MIB} MiB, {ROTATE_KEEP} kept",
                  "with the UI, every process of a run logs there (headless runs log to stderr)",
                  "set XDG_STATE_HOME to put it elsewhere", OK)]


def check_nats(url: str, creds: str | None = None, ca_file: str | None = None, timeout: float = 3.0) -> list[Check]:
    """The NATS server a fleet publishes to or a console attaches to: connect (with the
    credentials the environment or ``creds`` give), one round trip, the server's version and
    its largest message."""
    import asyncio

    from obitui.bus.publisher import client_options, redact

    async def probe() -> tuple[str, str]:
        import nats
        nc = await nats.connect(**client_options(url, creds, ca_file), connect_timeout=timeout,
                                allow_reconnect=False, max_reconnect_attempts=0)
        try:
            t0 = time.perf_counter()
            await nc.flush(timeout)
            rtt = (time.perf_counter() - t0) * 1e3
            info = nc._server_info if hasattr(nc, "_server_info") else {}
            return (f"{redact(url)}: server {info.get('version', '?')}, round trip {rtt:.1f} ms, "
                    f"max message {info.get('max_payload', 0) // 1024} KiB"), ""
        finally:
            await nc.close()

    try:
        text, _ = asyncio.run(asyncio.wait_for(probe(), timeout + 2))
        return [Check("NATS server", text, "reachable", "--publish / --attach talk to it (docs/NATS.md)",
                      "", OK)]
    except Exception as exc:            # refused, DNS, TLS, authorization, timeout
        return [Check("NATS server", f"{redact(url)}: {type(exc).__name__}: {exc}"[:160], "reachable",
                      "--publish / --attach talk to it; the fleet runs without it, but publishes nothing",
                      "start nats-server, check the URL, the credentials (OBITUI_NATS_*, --nats-creds) "
                      "and TLS (--nats-ca)", WARN)]


def run_checks(host: Host, ring_bytes: int, busy_processes: int) -> list[Check]:
    checks = (check_sysctls(host) + check_limits(host) + check_cpus(host, busy_processes)
              + check_shm(host, ring_bytes) + check_clock(host) + check_container(host, busy_processes)
              + check_software() + check_log())
    return checks


def render(checks: list[Check], width: int = 100) -> str:
    lines = []
    for c in sorted(checks, key=lambda c: _ORDER[c.severity]):
        lines.append(f"{c.severity.upper():<8} {c.name:<26} {c.current}")
        if c.severity != OK:
            lines.append(f"{'':<9}recommended: {c.recommended}")
            lines.append(f"{'':<9}why: {c.why}")
            lines.append(f"{'':<9}how: {c.how}")
    counts = {s: sum(c.severity == s for c in checks) for s in (CRITICAL, WARN, INFO, OK)}
    lines.append("")
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="obitui doctor", description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="one JSON object: {checks: [...], critical: n}")
    ap.add_argument("--root", default="/", metavar="DIR", help="read /proc, /sys, /dev/shm under DIR")
    ap.add_argument("--config", metavar="FILE", help="size the /dev/shm check for this config's rings")
    ap.add_argument("--nats-url", metavar="URL", help="check this NATS server (--publish / --attach)")
    ap.add_argument("--nats-creds", metavar="FILE", help="NATS credentials file")
    ap.add_argument("--nats-ca", metavar="FILE", help="CA file for tls:// NATS servers")
    args = ap.parse_args(argv)
    from obitui.config import ConfigError, load_config
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"obitui doctor: config: {exc}", file=sys.stderr)
        return 2
    from obitui.core.stats import StatsBlock
    from obitui.config import book_plan
    ring_bytes = (sum(f.ring_capacity + 4096 for f in cfg.feeds)
                  + StatsBlock.size_for(len(cfg.feeds), len(book_plan(cfg.feeds))))
    checks = run_checks(Host(args.root), ring_bytes, busy_processes=len(cfg.feeds) + 1)
    if args.nats_url:
        from obitui.bus.schema import url_problem
        problem = url_problem("--nats-url", args.nats_url)
        if problem is not None:
            print(f"obitui doctor: {problem}", file=sys.stderr)
            return 2
        checks += check_nats(args.nats_url, args.nats_creds, args.nats_ca)
    critical = sum(c.severity == CRITICAL for c in checks)
    if args.json:
        print(json.dumps({"checks": [asdict(c) for c in checks], "critical": critical}, indent=1))
    else:
        print(render(checks))
    return 1 if critical else 0


__all__ = ["Check", "Host", "run_checks", "render", "main"]
