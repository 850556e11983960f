"""`obitui sim`: the exchange simulator in the foreground."""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from obitui.sim.faults import FaultError, Faults, help_text


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="obitui sim",
        description="Exchange simulator on loopback: Binance spot and USD-M futures on one server "
                    "(USD-M depth under /public, trades under /market, REST /fapi/v1), Bitget v2 "
                    "(/v2/ws/public) and v3 UTA (/v3/ws/public) on another. Prints, as its "
                    "first lines, `binance ws=... rest=...` and `bitget ws=...` (then `bitget rest=...`, "
                    "`binance-usdm ...`, `bitget-v3 ws=...`); Ctrl+C or SIGTERM stops it.",
        epilog="faults (--sim-fault, repeatable):\n" + help_text()
               + "\n\nAt run time: POST /sim/fault?name=NAME&value=V (or ?clear=NAME) on the "
                 "binance port;\nthe true book: GET /sim/truth?venue=binance|binance-usdm|bitget|bitget-v3"
                 "&symbol=BTCUSDT[&id=N].",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=1, help="market model seed (default 1)")
    ap.add_argument("--port-base", type=int, metavar="P",
                    help="binance on P, bitget on P+1 (default: free ports)")
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    ap.add_argument("--rate", type=float, default=20.0,
                    help="market steps per second of BTCUSDT, ETHUSDT, PEPEUSDT; a made-up market steps "
                         "at this times its activity (busy ones ~11x, quiet ones ~0.85x or less)")
    ap.add_argument("--depth", type=int, default=2000,
                    help="levels per side (made-up markets: at most --minor-depth)")
    ap.add_argument("--minor-depth", type=int, default=200, metavar="N",
                    help="levels per side of the made-up markets (default 200)")
    ap.add_argument("--symbols", default="BTCUSDT,ETHUSDT",
                    help="comma-separated markets to simulate (default BTCUSDT,ETHUSDT; ~400 known, see "
                         "obitui.sim.universe), or top:N: the N most traded quoted in USDT and listed on "
                         "Binance and Bitget, with the others ranked among them")
    ap.add_argument("--changes", type=int, default=0, metavar="N",
                    help="level changes per market step (default: 1-4, like the real stream)")
    ap.add_argument("--checksum", action="store_true", help="Bitget books frames carry checksums")
    ap.add_argument("--string-seq", action="store_true",
                    help="Bitget books frames carry seq, pseq and checksum as decimal strings (UTA style)")
    ap.add_argument("--sim-fault", action="append", default=[], metavar="NAME[=VALUE]")
    ap.add_argument("--replay", metavar="FILE", help="serve a capture file instead of the market")
    ap.add_argument("--speed", type=float, default=1.0,
                    help="replay pacing: 1 original, X times faster, 0 as fast as the client reads")
    ap.add_argument("--duration", type=float, help="stop after S seconds")
    ap.add_argument("--exit-at-end", action="store_true",
                    help="replay: exit 2 s after every venue's frames were all sent to a client")
    ap.add_argument("--parent-pid", type=int, metavar="PID",
                    help="exit as soon as process PID (the supervisor that started us) is gone")
    ap.add_argument("--log-json", action="store_true", help="log JSON lines on stderr")
    ap.add_argument("--log-file", metavar="FILE", help="log to FILE (reopened when rotated) instead of stderr")
    return ap


async def _run(args: argparse.Namespace) -> int:
    from obitui.sim.replay import ReplaySimulator
    from obitui.sim.server import PortInUseError, SimConfig, Simulator
    sim: Simulator | ReplaySimulator
    if args.replay:
        sim = ReplaySimulator(args.replay, args.speed, args.host, args.port_base)
    else:
        sim = Simulator(SimConfig(seed=args.seed, rate=args.rate, host=args.host,
                                  port_base=args.port_base, depth=args.depth,
                                  bitget_checksum=args.checksum, faults=args.sim_fault,
                                  bitget_string_seq=args.string_seq,
                                  changes_per_step=args.changes, minor_depth=args.minor_depth,
                                  symbols=sim_symbols(args.symbols)))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    if args.parent_pid:
        # in a session of its own, so no terminal signal reaches it: watch the supervisor
        from obitui.lifeline import watch_parent
        watch_parent(args.parent_pid, lambda: loop.call_soon_threadsafe(stop.set))
    try:
        await sim.start()
    except PortInUseError as exc:
        print(f"obitui sim: {exc}", file=sys.stderr)
        return 1
    for line in sim.banner():
        print(line, flush=True)
    waits = [asyncio.ensure_future(stop.wait())]
    if args.replay and args.exit_at_end:
        async def ended() -> None:
            await sim.finished.wait()   # type: ignore[union-attr]
            await asyncio.sleep(1.0)    # let the clients apply what they received
            # the supervisor reads this, takes its last look, then stops us
            print("replay finished", flush=True)
            await asyncio.sleep(30.0)
        waits.append(asyncio.ensure_future(ended()))
    await asyncio.wait(waits, timeout=args.duration, return_when=asyncio.FIRST_COMPLETED)
    for w in waits:
        w.cancel()
    await sim.stop()
    return 0


def sim_symbols(text: str) -> tuple[str, ...]:
    """``--symbols``: names (upper-cased, duplicates dropped) or ``top:N`` (ValueError if not)."""
    from obitui.sim.universe import preset
    word = text.strip()
    if word.lower().startswith("top:"):
        try:
            n = int(word[4:])
        except ValueError:
            raise ValueError(f"--symbols {word}: top:N takes a whole number") from None
        if n < 1:
            raise ValueError(f"--symbols {word}: N must be at least 1")
        return preset(n)
    return tuple(dict.fromkeys(s.strip().upper() for s in word.split(",") if s.strip()))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.parent_pid:
        from obitui.lifeline import die_with_parent, set_title
        die_with_parent(args.parent_pid)
        set_title("obitui sim")
    try:
        Faults.from_specs(args.sim_fault)
    except FaultError as exc:
        print(f"obitui sim: {exc}", file=sys.stderr)
        return 2
    from obitui.sim.server import SimConfig, Simulator
    if not args.replay:
        try:
            Simulator(SimConfig(symbols=sim_symbols(args.symbols), depth=10))
        except ValueError as exc:
            print(f"obitui sim: {exc}", file=sys.stderr)
            return 2
    if args.replay:
        from pathlib import Path
        if not Path(args.replay).is_file():
            print(f"obitui sim: capture file {args.replay} not found", file=sys.stderr)
            return 2
    from obitui.logs import LogSpec, configure
    configure(LogSpec(logging.WARNING, args.log_json, args.log_file), "sim")
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    return asyncio.run(_run(args))
