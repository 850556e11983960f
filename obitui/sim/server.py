"""The simulator: market models, the Binance and Bitget servers on loopback, the stepping
loop, fault control and the truth endpoint. Run in-process (tests) or as `obitui sim`.

The Binance server speaks spot (``binance``) and USD-M futures (``binance-usdm``, separate
markets); the Bitget server speaks v2 (``bitget``) and v3 UTA (``bitget-v3``) over the same
markets. ``truth``/``models`` take any of these four venue names."""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from obitui.sim.binance import BinanceVenue
from obitui.sim.binance_usdm import USDM_FIRST_ID, USDM_ID_JUMP, USDM_SYMBOLS, BinanceUsdmVenue
from obitui.sim.bitget import BitgetVenue
from obitui.sim.faults import FaultError, Faults
from obitui.sim.market import ASK, BID, MarketModel, SymbolSpec

log = logging.getLogger("obitui.sim")

# PEPEUSDT: a memecoin's extremes, as listed: a price of 0.00001234 (8 decimals) and whole-unit
# quantities around 1e10 with a tail past 1e11, which 8 decimals cannot hold in an int64
BINANCE_SYMBOLS = (SymbolSpec("BTCUSDT", 2, 5, 2_700_000), SymbolSpec("ETHUSDT", 2, 4, 300_000),
                   SymbolSpec("PEPEUSDT", 8, 0, 1234, typical_lots=10**10))
BITGET_SYMBOLS = (SymbolSpec("BTCUSDT", 2, 6, 2_700_000), SymbolSpec("ETHUSDT", 2, 4, 300_000),
                  SymbolSpec("PEPEUSDT", 8, 0, 1234, typical_lots=10**10))


class PortInUseError(OSError):
    """A fixed port of --port-base is taken."""


@dataclass(slots=True)
class SimConfig:
    seed: int = 1
    rate: float = 20.0              # market steps per second per symbol
    host: str = "127.0.0.1"
    port_base: int | None = None    # binance = base, bitget = base + 1; None: free ports
    depth: int = 2000               # levels per side
    ping_interval: float = 20.0     # Binance server ping frames
    pong_timeout: float = 60.0
    bitget_ping_timeout: float = 120.0
    ticker_interval: float = 0.2
    bitget_checksum: bool = False   # current Bitget feeds omit it; older ones send it
    bitget_string_seq: bool = False  # seq, pseq and checksum as decimal strings (UTA style)
    # Bitget limits per connection (the real venue's; tests lower them to reach them quickly)
    bitget_msgs_per_s: int = 10             # client messages (subscribe, unsubscribe, ping)
    bitget_subscribes_per_hour: int = 240   # subscribe and unsubscribe requests
    bitget_max_channels: int = 1000
    weight_limit: int = 6000        # Binance REST weight per minute
    usdm_weight_limit: int = 2400   # Binance USD-M REST weight per minute (a budget of its own)
    usdm_ping_interval: float = 180.0   # Binance USD-M server ping frames
    usdm_pong_timeout: float = 600.0
    # Bitget v3: how often a books snapshot reports a seq inside (S, next update's seq)
    bitget_v3_snapshot_inside: float = 0.5
    retry_after_429: int = 1
    retry_after_418: int = 2
    faults: list[str] = field(default_factory=list)
    symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT")
    changes_per_step: int = 0       # level changes per market step (0: 1-4, like the real stream)


class Simulator:
    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self.faults = Faults.from_specs(self.config.faults)
        self.counters: dict[str, int] = {}
        # limits of the real venues that a client broke (message rates, subscriptions, REST
        # weight, stream counts): the venue would disconnect or ban it; tests assert none
        self.violations: dict[str, int] = {}
        seed = self.config.seed
        want = set(self.config.symbols)
        unknown = want - {s.symbol for s in BINANCE_SYMBOLS}
        if unknown:
            raise ValueError(f"the simulator has no market for {', '.join(sorted(unknown))}; "
                             f"it knows {', '.join(s.symbol for s in BINANCE_SYMBOLS)}")
        self.binance_models = {s.symbol: MarketModel(_with_depth(s, self.config.depth), seed * 1000 + i,
                                                   changes_per_step=self.config.changes_per_step)
                               for i, s in enumerate(BINANCE_SYMBOLS) if s.symbol in want}
        self.bitget_models = {s.symbol: MarketModel(_with_depth(s, self.config.depth), seed * 1000 + 500 + i,
                                                  changes_per_step=self.config.changes_per_step)
                              for i, s in enumerate(BITGET_SYMBOLS) if s.symbol in want}
        self.usdm_models = {s.symbol: MarketModel(_with_depth(s, self.config.depth), seed * 1000 + 250 + i,
                                                first_update_id=USDM_FIRST_ID + (seed * 7919 + i * 104_729) % 10**9,
                                                changes_per_step=self.config.changes_per_step,
                                                id_jump=USDM_ID_JUMP)
                            for i, s in enumerate(USDM_SYMBOLS) if s.symbol in want}
        self.binance = BinanceVenue(self, self.binance_models)
        self.binance_usdm = BinanceUsdmVenue(self, self.usdm_models)
        self.binance.share_server(self.binance_usdm)
        self.bitget = BitgetVenue(self, self.bitget_models)
        self._conn_seq = 0
        self._runners: list[web.AppRunner] = []
        self._loop_task: asyncio.Task[None] | None = None
        self.ports: dict[str, int] = {}
        self.started = 0.0

    # ------------------------------------------------------------ bookkeeping
    def count(self, what: str, n: int = 1) -> None:
        self.counters[what] = self.counters.get(what, 0) + n

    def violation(self, what: str, detail: str = "") -> None:
        """A client broke a limit of the real venue (``what``: e.g. ``binance_ws_msg_rate``):
        counted apart from the other counters and logged."""
        self.violations[what] = self.violations.get(what, 0) + 1
        self.count("violations")
        log.warning("client violated a venue limit: %s %s", what, detail)

    def next_conn_seed(self) -> int:
        self._conn_seq += 1
        return self.config.seed * 7919 + self._conn_seq

    @property
    def binance_ws_url(self) -> str:
        return f"ws://{self.config.host}:{self.ports['binance']}"

    @property
    def binance_rest_url(self) -> str:
        return f"http://{self.config.host}:{self.ports['binance']}"

    @property
    def bitget_ws_url(self) -> str:
        return f"ws://{self.config.host}:{self.ports['bitget']}/v2/ws/public"

    @property
    def bitget_rest_url(self) -> str:
        return f"http://{self.config.host}:{self.ports['bitget']}"

    @property
    def bitget_v3_ws_url(self) -> str:
        return f"ws://{self.config.host}:{self.ports['bitget']}/v3/ws/public"

    def banner(self) -> list[str]:
        """The first lines `obitui sim` prints (the first two are a contract, the third is read
        by the supervisor; the USD-M and v3 lines come after them)."""
        return [f"binance ws={self.binance_ws_url} rest={self.binance_rest_url}",
                f"bitget ws={self.bitget_ws_url}",
                f"bitget rest={self.bitget_rest_url}",
                f"binance-usdm ws={self.binance_ws_url}/public ws-market={self.binance_ws_url}/market "
                f"rest={self.binance_rest_url}",
                f"bitget-v3 ws={self.bitget_v3_ws_url}"]

    # ------------------------------------------------------------ life cycle
    async def start(self) -> None:
        cfg = self.config
        control = [web.get("/sim/truth", self._truth_handler), web.post("/sim/fault", self._fault_handler),
                   web.get("/sim/stats", self._stats_handler)]
        servers = (("binance", self.binance.routes() + self.binance_usdm.routes()),
                   ("bitget", self.bitget.routes()))
        for i, (name, routes) in enumerate(servers):
            app = web.Application()
            app.add_routes(routes + control)
            runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=2.0)
            await runner.setup()
            self._runners.append(runner)
            port = 0 if cfg.port_base is None else cfg.port_base + i
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                sock.bind((cfg.host, port))
            except OSError as exc:
                sock.close()
                await self.stop()
                raise PortInUseError(f"cannot listen on {cfg.host}:{port} for {name}: {exc.strerror}") from None
            sock.listen(128)
            site = web.SockSite(runner, sock)
            await site.start()
            self.ports[name] = sock.getsockname()[1]
        self.started = time.monotonic()
        self._loop_task = asyncio.get_running_loop().create_task(self._run_market())

    async def stop(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            try:
                await self._loop_task
            except asyncio.CancelledError:
                pass
            self._loop_task = None
        self.binance.close_all()
        self.binance_usdm.close_all()
        self.bitget.close_all()
        await asyncio.sleep(0)
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------ the market
    def step_all(self) -> None:
        """One step of every market, fanned out to the subscribers."""
        ts = int(time.time() * 1000)
        for symbol, model in self.binance_models.items():
            self.binance.on_step(symbol, model, model.step(ts))
        for symbol, model in self.usdm_models.items():
            self.binance_usdm.on_step(symbol, model, model.step(ts))
        for symbol, model in self.bitget_models.items():
            self.bitget.on_step(symbol, model, model.step(ts))
        self.count("steps")

    async def _run_market(self) -> None:
        done = 0
        t0 = time.monotonic()
        rate = self.config.rate
        while True:
            want = self.faults.burst or self.config.rate
            if want != rate:      # a rate change restarts the schedule from now
                rate, done, t0 = want, 0, time.monotonic()
            due = int((time.monotonic() - t0) * rate) - done
            if due > max(1, rate * 0.2):   # far behind (a stall): skip, do not burst to catch up
                self.count("steps_skipped", due - int(rate * 0.2))
                done += due - int(rate * 0.2)
                due = int(rate * 0.2)
            for _ in range(due):
                self.step_all()
            done += due
            next_at = t0 + (done + 1) / rate
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    # ------------------------------------------------------------ truth and control
    def _venue(self, venue: str) -> tuple[dict[str, MarketModel], BinanceVenue | BitgetVenue]:
        if venue == "binance":
            return self.binance_models, self.binance
        if venue == "binance-usdm":
            return self.usdm_models, self.binance_usdm
        if venue in ("bitget", "bitget-v3"):     # two APIs over the same exchange books
            return self.bitget_models, self.bitget
        raise KeyError(f"unknown venue {venue!r}")

    def models(self, venue: str) -> dict[str, MarketModel]:
        """The markets of a venue API: binance, binance-usdm, bitget or bitget-v3 (the same
        markets as bitget)."""
        return self._venue(venue)[0]

    def truth(self, venue: str, symbol: str, update_id: int | None = None) -> dict[str, Any] | None:
        """The true book (exact strings, best first) now, or right after update ``update_id``
        (Binance ``u``; Bitget ``seq``); None if that is no longer in the history. Bitget v3
        takes a seq between two updates too (a v3 snapshot's): the book after the earlier."""
        models, fmt_venue = self._venue(venue)
        model = models[symbol]
        if venue.startswith("binance"):
            book = model.book_at(update_id=update_id)
            uid = model.update_id if update_id is None else update_id
        else:
            book = model.book_at(seq=update_id, floor=venue == "bitget-v3")
            uid = model.seq if update_id is None else update_id
        if book is None:
            return None
        bids, asks = book
        return {"venue": venue, "symbol": symbol, "update_id": uid,
                "bids": [[fmt_venue.px(model, p), fmt_venue.qty(model, q)] for p, q in sorted(bids.items(), reverse=True)],
                "asks": [[fmt_venue.px(model, p), fmt_venue.qty(model, q)] for p, q in sorted(asks.items())]}

    async def _truth_handler(self, request: web.Request) -> web.Response:
        q = request.query
        try:
            uid = int(q["id"]) if "id" in q else None
            body = self.truth(q.get("venue", ""), q.get("symbol", ""), uid)
        except (KeyError, ValueError) as exc:
            return web.Response(status=400, text=f"bad truth query: {exc}\n")
        if body is None:
            return web.Response(status=404, text="that update is no longer in the history\n")
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def _fault_handler(self, request: web.Request) -> web.Response:
        q = request.query
        try:
            if "clear" in q:
                self.faults.clear(q["clear"] or None)
            else:
                self.faults.set(q["name"], q.get("value"))
        except (KeyError, FaultError, ValueError) as exc:
            return web.Response(status=400, text=f"bad fault request: {exc}\n")
        return web.Response(body=orjson.dumps(self.faults.active()), content_type="application/json")

    async def _stats_handler(self, request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps({"counters": self.counters, "violations": self.violations,
                                               "faults": self.faults.active(),
                                               "connections": {"binance": len(self.binance.conns),
                                                               "binance-usdm": len(self.binance_usdm.conns),
                                                               **self.bitget.conn_counts()}}),
                            content_type="application/json")


def _with_depth(spec: SymbolSpec, depth: int) -> SymbolSpec:
    return dataclasses.replace(spec, depth=depth)


__all__ = ["Simulator", "SimConfig", "PortInUseError", "BID", "ASK"]
