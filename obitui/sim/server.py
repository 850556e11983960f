"""The simulator: market models, the Binance and Bitget servers on loopback, the stepping
loop, fault control and the truth endpoint. Run in-process (tests) or as `obitui sim`.

The Binance server speaks spot (``binance``) and USD-M futures (``binance-usdm``, separate
markets); the Bitget server speaks v2 (``bitget``) and v3 UTA (``bitget-v3``) over the same
markets. ``truth``/``models`` take any of these four venue names.

The markets are those of ``obitui.sim.universe`` (three real ones, ~400 made-up ones);
``SimConfig.symbols`` picks the ones simulated, each on the venue APIs listing it. Each market
steps at its own rate (``SimConfig.rate`` times its activity): the loop wakes when the next
market is due (every millisecond at most) and steps those due, one timetable (a heap) for
all."""
from __future__ import annotations

import asyncio
import dataclasses
import heapq
import logging
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from obitui.sim.binance import BinanceVenue
from obitui.sim.binance_usdm import USDM_FIRST_ID, USDM_ID_JUMP, BinanceUsdmVenue
from obitui.sim.bitget import BitgetVenue
from obitui.sim.faults import FaultError, Faults
from obitui.sim.market import ASK, BID, MarketModel, SymbolSpec
from obitui.sim.universe import listings, universe, venue_specs

log = logging.getLogger("obitui.sim")

# every market each venue lists (the real three first, with their exact specs)
BINANCE_SYMBOLS = venue_specs("binance")
BITGET_SYMBOLS = venue_specs("bitget")
KNOWN_SYMBOLS = frozenset(m.symbol for m in universe())   # listed on some venue
MAX_LAG_S = 0.2      # a market further behind its timetable skips steps (a stall), not bursts
MAX_REQUEST_LINE = 64 * 1024
TICK_S = 0.001       # the loop sleeps at least this long: due markets are stepped together
# seeds of the made-up markets' models: apart from the real ones' (seed * 1000 + offset + i)
SEED_OFFSETS = {"binance": 0, "binance-usdm": 250, "bitget": 500}


class PortInUseError(OSError):
    """A fixed port of --port-base is taken."""


@dataclass(slots=True)
class SimConfig:
    seed: int = 1
    rate: float = 20.0              # steps/s of a market of activity 1 (the real three; see universe)
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
    symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT")   # any of obitui.sim.universe
    changes_per_step: int = 0       # level changes per market step (0: 1-4, like the real stream)
    # the made-up markets: levels per side (at most ``depth``; a model starts in ~0.5 ms at 200)
    # and steps of truth history kept (~180 bytes a step: 300 markets keep ~110 MB at most;
    # 2000 steps are 10 s of the busiest market)
    minor_depth: int = 200
    minor_history: int = 2000


@dataclass(slots=True)
class Scheduled:
    """A market on the timetable: one venue API's model and its step rate."""
    venue: BinanceVenue | BitgetVenue
    symbol: str
    model: MarketModel
    activity: float                 # steps/s relative to SimConfig.rate


class Simulator:
    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self.faults = Faults.from_specs(self.config.faults)
        self.counters: dict[str, int] = {}
        # limits of the real venues that a client broke (message rates, subscriptions, REST
        # weight, stream counts): the venue would disconnect or ban it; tests assert none
        self.violations: dict[str, int] = {}
        known = listings()
        unknown = [s for s in dict.fromkeys(self.config.symbols) if s not in known]
        if unknown:
            raise ValueError(f"the simulator has no market for {', '.join(unknown)}; it knows "
                             f"{len(known)} ({', '.join(list(known)[:4])}, ...: obitui.sim.universe)")
        self.binance_models = self._models("binance")
        self.usdm_models = self._models("binance-usdm")
        self.bitget_models = self._models("bitget")
        self.binance = BinanceVenue(self, self.binance_models)
        self.binance_usdm = BinanceUsdmVenue(self, self.usdm_models)
        self.binance.share_server(self.binance_usdm)
        self.bitget = BitgetVenue(self, self.bitget_models)
        self._conn_seq = 0
        self._runners: list[web.AppRunner] = []
        self._loop_task: asyncio.Task[None] | None = None
        self.ports: dict[str, int] = {}
        self.started = 0.0
        self.schedule = ([Scheduled(self.binance, sym, m, self.activity("binance", sym))
                          for sym, m in self.binance_models.items()]
                         + [Scheduled(self.binance_usdm, sym, m, self.activity("binance-usdm", sym))
                            for sym, m in self.usdm_models.items()]
                         + [Scheduled(self.bitget, sym, m, self.activity("bitget", sym))
                            for sym, m in self.bitget_models.items()])

    def _models(self, venue: str) -> dict[str, MarketModel]:
        """The models of the configured markets a venue API lists. The real three keep their
        seeds and depth; made-up ones get ``minor_depth`` levels and ``minor_history``."""
        cfg = self.config
        seed, offset = cfg.seed, SEED_OFFSETS[venue]
        want = set(cfg.symbols)
        out: dict[str, MarketModel] = {}
        for i, m in enumerate(universe()):
            if m.symbol not in want or venue not in m.specs:
                continue
            spec = m.specs[venue]
            kw: dict[str, Any] = {"changes_per_step": cfg.changes_per_step, "day": m.day(venue)}
            if m.real:
                model_seed = seed * 1000 + offset + i
                spec = _with_depth(spec, cfg.depth)
            else:
                model_seed = (seed * 1000 + offset) * 1000 + i
                spec = _with_depth(spec, min(cfg.depth, cfg.minor_depth))
                kw["history"] = cfg.minor_history
            if venue == "binance-usdm":
                kw.update(first_update_id=USDM_FIRST_ID + (seed * 7919 + i * 104_729) % 10**9,
                          id_jump=USDM_ID_JUMP)
            out[m.symbol] = MarketModel(spec, model_seed, **kw)
        return out

    def activity(self, venue: str, symbol: str) -> float:
        """A market's steps per second on a venue API, relative to ``SimConfig.rate``."""
        return listings()[symbol].activity[venue]

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
            # a combined stream URL names up to 1024 streams: request lines of up to 64 KiB
            runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=2.0,
                                   max_line_size=MAX_REQUEST_LINE)
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
        for m in self.schedule:
            m.venue.on_step(m.symbol, m.model, m.model.step(ts))
        self.count("steps", len(self.schedule))

    async def _run_market(self) -> None:
        """Step each market at its rate: a heap of (due time, market); each wake-up steps
        every market due (a market due several times steps several times, up to MAX_LAG_S
        behind: further behind, after a stall, the steps are skipped and counted)."""
        markets = self.schedule
        if not markets:
            return
        rates = (-1.0, -1.0)
        heap: list[tuple[float, int]] = []
        periods: list[float] = []
        while True:
            if (self.faults.burst, self.config.rate) != rates:   # a rate change: a new timetable
                rates = burst, rate = self.faults.burst, self.config.rate
                now = time.monotonic()
                # the burst fault sets every market's rate; markets start staggered: the i-th
                # of n first steps (i + 1) / n of its period from now
                periods = [1.0 / (burst or rate * m.activity) for m in markets]
                heap = [(now + p * (i + 1) / len(markets), i) for i, p in enumerate(periods)]
                heapq.heapify(heap)
            now = time.monotonic()
            ts = int(time.time() * 1000)
            late = now - MAX_LAG_S
            stepped = skipped = 0
            while heap[0][0] <= now:
                due, i = heap[0]
                period = periods[i]
                if due < late:
                    n = int((late - due) / period) + 1
                    skipped += n
                    due += n * period
                    if due > now:
                        heapq.heapreplace(heap, (due, i))
                        continue
                m = markets[i]
                m.venue.on_step(m.symbol, m.model, m.model.step(ts))
                heapq.heapreplace(heap, (due + period, i))
                stepped += 1
            if stepped:
                self.count("steps", stepped)
            if skipped:
                self.count("steps_skipped", skipped)
            await asyncio.sleep(max(TICK_S, heap[0][0] - time.monotonic()))

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
                                               "markets": {"binance": len(self.binance_models),
                                                           "binance-usdm": len(self.usdm_models),
                                                           "bitget": len(self.bitget_models)},
                                               "connections": {"binance": len(self.binance.conns),
                                                               "binance-usdm": len(self.binance_usdm.conns),
                                                               **self.bitget.conn_counts()}}),
                            content_type="application/json")


def _with_depth(spec: SymbolSpec, depth: int) -> SymbolSpec:
    return dataclasses.replace(spec, depth=depth)


__all__ = ["Simulator", "SimConfig", "PortInUseError", "BID", "ASK"]
