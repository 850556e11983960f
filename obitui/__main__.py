"""Command line: `obitui [options]` runs the console; subcommands run the other tools.

Textual is imported only when the UI is requested, so headless runs, the simulator, the
benchmarks and the doctor never load it.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from typing import NoReturn

BENCH_TARGETS = {
    "ring": "obitui.bench.ring",
    "book": "obitui.bench.book",
    "sim": "obitui.bench.sim",
    "pipeline": "obitui.bench.pipeline",
    "scale": "obitui.bench.scale",
    "feed": "obitui.bench.feed",
    "ui": "obitui.bench.ui",
    "nats": "obitui.bench.nats",
    "soak": "obitui.soak",
}


class Parser(argparse.ArgumentParser):
    """A bad command line is one error line on stderr and exit 2 (no usage block: `--help`
    has it)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    ap = Parser(
        prog="obitui",
        description="Operator console for low-latency crypto market data "
                    "(Binance spot and USD-M futures, Bitget v2 and v3): feeds -> shared-memory rings -> "
                    "engine -> UI.",
        epilog="Logs: headless runs log to stderr (JSON lines with --json); with the UI every "
               "process logs to $XDG_STATE_HOME/obitui/obitui.log (default "
               "~/.local/state/obitui/obitui.log), rotated past 10 MiB with 3 older files kept. "
               "`obitui doctor` shows where it is.",
    )
    from obitui import __version__
    ap.add_argument("--version", action="version", version=f"obitui {__version__}")
    ap.add_argument("--config", metavar="FILE", help="TOML config (default: built-in four feeds)")
    ap.add_argument("--sim", action="store_true", help="run against the built-in exchange simulator")
    ap.add_argument("--sim-fault", action="append", default=[], metavar="NAME[=VALUE]",
                    help="inject a simulator fault (repeatable; see `obitui sim --help`)")
    ap.add_argument("--sim-rate", type=float, metavar="STEPS",
                    help="with --sim: market steps per second per symbol (default 20)")
    ap.add_argument("--no-ui", action="store_true", help="headless: print status lines")
    ap.add_argument("--refresh-hz", type=float, default=8.0, metavar="HZ",
                    help="UI refresh rate (default 8)")
    ap.add_argument("--no-mouse", action="store_true", help="UI: do not capture the mouse")
    ap.add_argument("--json", action="store_true", help="headless: one JSON object per interval")
    ap.add_argument("--interval", type=float, metavar="S",
                    help="headless print interval (default: the config's `interval`, 1 s)")
    ap.add_argument("--symbols", metavar="SYM,...|top:N",
                    help="the markets every feed watches: a list (BTCUSDT,ETHUSDT) or top:N, the N most "
                         "traded USDT markets listed on every venue (asked from the venues at start)")
    ap.add_argument("--books", metavar="SYM,...",
                    help="--json: only these markets' books (SYMBOL or venue:SYMBOL, comma separated)")
    ap.add_argument("--levels", type=int, default=20, metavar="N",
                    help="--json: levels per side of each book, 0-20 (default 20)")
    ap.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    ap.add_argument("--record", metavar="DIR", help="record every raw frame to capture files in DIR")
    ap.add_argument("--replay", metavar="FILE", help="replay a capture file through the simulator")
    ap.add_argument("--speed", type=float, default=1.0, metavar="X",
                    help="replay pacing: 1 original, X times faster, 0 as fast as the feeds read")
    ap.add_argument("--metrics-port", type=int, metavar="PORT",
                    help="serve Prometheus metrics on PORT (0: any free port, logged)")
    ap.add_argument("--publish", metavar="URL",
                    help="also publish the fleet's books, trades and feed states to this NATS server "
                         "(nats://host:4222, tls://...; docs/NATS.md)")
    ap.add_argument("--publish-host", metavar="NAME",
                    help="the host name in the subjects (default: this machine's)")
    ap.add_argument("--publish-rate", type=float, default=8.0, metavar="HZ",
                    help="publish what changed this often (default 8)")
    ap.add_argument("--publish-jetstream", type=float, metavar="MAX_AGE",
                    help="also keep each book's last message in the JetStream stream OBITUI_<host>_BOOKS "
                         "for MAX_AGE seconds (created or updated at connect; off by default; a server "
                         "without JetStream is a logged error and publishing goes on; docs/NATS.md)")
    ap.add_argument("--publish-jetstream-storage", choices=("memory", "file"), default="memory",
                    help="that stream's storage (default memory)")
    ap.add_argument("--allow-remote-control", action="store_true",
                    help="carry out r/s requests that attached consoles send over NATS")
    ap.add_argument("--attach", metavar="URL[,URL]",
                    help="the console (or --no-ui/--json) on the remote fleets publishing on these NATS "
                         "servers; with --sim/--config, beside the local fleet (docs/NATS.md)")
    ap.add_argument("--nats-creds", metavar="FILE",
                    help="NATS credentials file (token or user/password: OBITUI_NATS_TOKEN, "
                         "OBITUI_NATS_USER, OBITUI_NATS_PASSWORD in the environment)")
    ap.add_argument("--nats-ca", metavar="FILE", help="CA file for tls:// NATS servers")
    ap.add_argument("--metrics-host", default="127.0.0.1", metavar="ADDR",
                    help="address of the metrics endpoint (default 127.0.0.1)")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("sim", help="run the exchange simulator in the foreground", add_help=False)
    b = sub.add_parser("bench", help="benchmarks against baselines, side by side "
                                     f"({', '.join(BENCH_TARGETS)})")
    b.add_argument("target", choices=list(BENCH_TARGETS))
    b.add_argument("args", nargs=argparse.REMAINDER, help="arguments of the benchmark")
    sub.add_parser("doctor", help="inspect host tuning for low latency", add_help=False)
    sub.add_parser("soak", help="fault-injection soak of the whole fleet", add_help=False)
    return ap


def bad_number(args: argparse.Namespace) -> str:
    """The first out-of-range numeric option, as one line for the operator ('' when all are
    fine). NaN and infinities are refused: they would make the print loop spin or never end."""
    checks = [("--interval", args.interval, False), ("--duration", args.duration, False),
              ("--refresh-hz", args.refresh_hz, False), ("--sim-rate", args.sim_rate, False),
              ("--speed", args.speed, True), ("--publish-rate", args.publish_rate, False),
              ("--publish-jetstream", args.publish_jetstream, False)]
    for flag, value, zero_ok in checks:
        if value is None:
            continue
        if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
            return f"{flag} must be a finite number {'>=' if zero_ok else '>'} 0, got {value:g}"
    if args.metrics_port is not None and not 0 <= args.metrics_port <= 65535:
        return f"--metrics-port must be in [0, 65535], got {args.metrics_port}"
    if not 0 <= args.levels <= 20:
        return f"--levels must be in [0, 20], got {args.levels}"
    return ""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = build_parser()
    args, extra = ap.parse_known_args(argv)
    if args.command == "bench":
        import importlib
        import signal

        def terminated(signum: int, _frame: object) -> None:
            raise SystemExit(128 + signum)      # a fleet the bench runs stops, its segments go

        signal.signal(signal.SIGTERM, terminated)
        module = importlib.import_module(BENCH_TARGETS[args.target])
        return int(module.main(list(args.args) + extra) or 0)
    if args.command == "sim":
        from obitui.sim.cli import main as sim_main
        return sim_main(argv[argv.index("sim") + 1:])
    if args.command == "doctor":
        from obitui.doctor import main as doctor_main
        return doctor_main(argv[argv.index("doctor") + 1:])
    if args.command == "soak":
        from obitui.soak import main as soak_main
        return soak_main(argv[argv.index("soak") + 1:])
    if extra:
        ap.error(f"unrecognized arguments: {' '.join(extra)}")
    from obitui.config import ConfigError, load_config
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"obitui: config: {exc}", file=sys.stderr)
        return 2
    top: int | None = None
    if args.symbols is not None:
        from obitui.config import with_symbols
        from obitui.feeds.universe import parse_symbols
        try:
            wanted = parse_symbols(args.symbols)
            if isinstance(wanted, int):
                top = wanted
            else:
                cfg = with_symbols(cfg, wanted)
        except (ValueError, ConfigError) as exc:
            print(f"obitui: {exc}", file=sys.stderr)
            return 2
    if args.sim_fault:
        from obitui.sim.faults import FaultError, Faults
        try:
            Faults.from_specs(args.sim_fault)
        except FaultError as exc:
            print(f"obitui: {exc}", file=sys.stderr)
            return 2
    bad = bad_number(args)
    if bad:
        print(f"obitui: {bad}", file=sys.stderr)
        return 2
    metrics = (args.metrics_host, args.metrics_port) if args.metrics_port is not None else None
    for flag, value in (("--publish", args.publish), ("--attach", args.attach)):
        if value is None:
            continue
        from obitui.bus.schema import url_problem
        problem = url_problem(flag, value)
        if problem is not None:
            print(f"obitui: {problem}", file=sys.stderr)
            return 2
    if args.publish_jetstream is not None and args.publish is None:
        print("obitui: --publish-jetstream: only with --publish", file=sys.stderr)
        return 2
    if args.nats_creds is not None and not os.path.isfile(args.nats_creds):
        print(f"obitui: --nats-creds {args.nats_creds}: no such file", file=sys.stderr)
        return 2
    attachment = None
    if args.attach is not None:
        from obitui.bus import attach
        urls = [u.strip() for u in args.attach.split(",")]
        if not (args.sim or args.replay or args.config or args.publish or args.symbols):
            # remote fleets only: no local feeds
            if not (args.no_ui or args.json):
                from obitui.app import run_attach_app
                return run_attach_app(urls, refresh_hz=args.refresh_hz, mouse=not args.no_mouse,
                                      creds=args.nats_creds, ca_file=args.nats_ca)
            from obitui.headless import setup_logging
            setup_logging(args.json)
            return attach.run(urls, as_json=args.json,
                              interval=cfg.interval if args.interval is None else args.interval,
                              duration=args.duration, levels=args.levels, creds=args.nats_creds,
                              ca_file=args.nats_ca)
        # a local fleet too (--sim, --config, ...): its lines first, the remote ones after
        attachment = attach.Attachment(urls, args.nats_creds, args.nats_ca)
    publish = None
    if args.publish is not None:
        from obitui.bus.publisher import PublishSpec
        from obitui.bus.schema import default_host, token
        publish = PublishSpec(args.publish, token(args.publish_host) if args.publish_host else default_host(),
                              rate=args.publish_rate, allow_control=args.allow_remote_control,
                              creds=args.nats_creds, ca_file=args.nats_ca,
                              jetstream_max_age=args.publish_jetstream,
                              jetstream_storage=args.publish_jetstream_storage)
    if args.replay:
        from pathlib import Path
        if not Path(args.replay).is_file():
            print(f"obitui: capture file {args.replay} not found", file=sys.stderr)
            return 2
        from obitui.replay_config import feeds_from_capture
        try:
            cfg.feeds = feeds_from_capture(args.replay)
        except ValueError as exc:
            print(f"obitui: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:
            print(f"obitui: capture file {args.replay}: {exc.strerror or exc}", file=sys.stderr)
            return 2
    if args.record:
        from pathlib import Path
        try:
            Path(args.record).mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            print(f"obitui: --record {args.record}: exists and is not a directory", file=sys.stderr)
            return 2
        except OSError as exc:
            print(f"obitui: --record {args.record}: {exc.strerror or exc}", file=sys.stderr)
            return 2
    if args.no_ui or args.json:
        from obitui import headless
        books = None
        book_names = None
        if args.books is not None and top is not None:
            book_names = args.books.split(",")      # the markets are known once top:N is resolved
        elif args.books is not None:
            try:
                books = headless.select_books(cfg, args.books.split(","))
            except ValueError as exc:
                print(f"obitui: {exc}", file=sys.stderr)
                return 2
        headless.setup_logging(args.json)
        return headless.run(cfg, sim=args.sim, sim_faults=args.sim_fault, as_json=args.json,
                            interval=cfg.interval if args.interval is None else args.interval,
                            duration=args.duration,
                            record_dir=args.record, replay=args.replay, replay_speed=args.speed,
                            sim_rate=args.sim_rate, metrics=metrics, books=books, levels=args.levels,
                            top=top, book_names=book_names, publish=publish, attach=attachment)
    from obitui.app import run_app
    return run_app(cfg, sim=args.sim, sim_faults=args.sim_fault, refresh_hz=args.refresh_hz,
                   mouse=not args.no_mouse, record_dir=args.record, replay=args.replay,
                   replay_speed=args.speed, sim_rate=args.sim_rate, metrics=metrics, top=top,
                   publish=publish, attach=attachment)


if __name__ == "__main__":
    sys.exit(main())
