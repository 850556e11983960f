"""Simulated Binance USD-M futures, a dialect of the Binance venue served on the Binance server
(docs/PROTOCOLS.md, Binance USD-M futures).

- WebSocket routes (since 2026-04-23): depth streams under ``/public`` (``/public/ws/<stream>``,
  ``/public/stream?streams=a/b``), trades under ``/market`` (``<sym>@aggTrade``). A stream on
  the other route connects and stays silent, as the real venue's unrouted URLs do.
- ``depthUpdate`` events carry ``T`` and ``pu`` (the previous event's ``u`` of that stream);
  update ids are NOT contiguous between events (the markets' ids jump between steps), so a
  client chains on ``pu == previous u``. ``@depth`` (250 ms), ``@depth@250ms``, ``@depth@500ms``,
  ``@depth@100ms`` and ``@depth@0ms`` (every market step).
- aggTrade events without spot's ``M``.
- REST ``GET /fapi/v1/depth`` (limit 5, 10, 20, 50, 100, 500 or 1000, default 500; another
  answers 400 -1130; weight 2/2/2/2/5/10/20) with ``E`` and ``T``; ``/fapi/v1/exchangeInfo``
  (weight 1), ``/fapi/v1/ticker/24hr`` (weight 1 for a symbol, 40 for all), ``/fapi/v1/ping``,
  ``/fapi/v1/time``.
- Limits: 10 incoming messages a second per connection, 1024 streams per connection, REST
  weight ``usdm_weight_limit`` (2400) per minute and IP, a budget apart from spot's; breaches
  are violations named ``binance_usdm_*``. Server pings every ``usdm_ping_interval`` (180 s),
  closed after ``usdm_pong_timeout`` (600 s) without a pong.

Everything else (pacing, faults, serverShutdown, 429/418 and Retry-After, the stale snapshot)
is the spot code path of ``BinanceVenue``."""
from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from obitui.sim.binance import BinanceVenue, DepthAcc, IpLimits, _json
from obitui.sim.market import MarketModel, Trade, fmt
from obitui.sim.universe import venue_specs

# the USD-M markets: perpetuals of spot's USDT markets (about half of the made-up ones), coarser
# quantities (BTCUSDT: tick 0.10, step 0.001)
USDM_SYMBOLS = venue_specs("binance-usdm")
# pricePrecision where prices are written with more decimals than the tick has ("27000.10")
PRICE_PRECISION = {"BTCUSDT": 2}
USDM_ID_JUMP = 40               # update ids jump by 1-40 between market steps
USDM_FIRST_ID = 7_400_000_000_000   # u is past 2**32 on the real venue
DEPTH_LIMITS = (5, 10, 20, 50, 100, 500, 1000)
USDM_DEPTH_INTERVALS = {"depth": 0.25, "depth@250ms": 0.25, "depth@500ms": 0.5,
                        "depth@100ms": 0.1, "depth@0ms": 0.0}


def usdm_depth_weight(limit: int) -> int:
    """Weight of GET /fapi/v1/depth by its limit."""
    return 2 if limit <= 50 else 5 if limit <= 100 else 10 if limit <= 500 else 20


class BinanceUsdmVenue(BinanceVenue):
    venue_name = "binance-usdm"
    key = "binance_usdm"
    ws_routes = {"/public": frozenset({"depth"}), "/market": frozenset({"aggTrade"})}
    depth_intervals = USDM_DEPTH_INTERVALS
    trade_streams = ("aggTrade",)
    ws_msg_limit = 10
    max_streams = 1024
    rest_prefix = "/fapi/v1"
    exchange_info_weight = 1
    default_depth_limit = 500
    count_prefix = "usdm_"

    # ------------------------------------------------------------ configuration
    @property
    def weight_limit(self) -> int:
        return self.sim.config.usdm_weight_limit

    @property
    def ping_interval(self) -> float:
        return self.sim.config.usdm_ping_interval

    @property
    def pong_timeout(self) -> float:
        return self.sim.config.usdm_pong_timeout

    # ------------------------------------------------------------ formatting
    def px(self, model: MarketModel, ticks: int) -> str:
        spec = model.spec
        return fmt(ticks, spec.price_decimals, PRICE_PRECISION.get(spec.symbol))

    def qty(self, model: MarketModel, lots: int) -> str:
        return fmt(lots, model.spec.qty_decimals)

    def book_body(self, model: MarketModel, bids: dict[int, int], asks: dict[int, int],
                  update_id: int, limit: int) -> dict[str, Any]:
        body = super().book_body(model, bids, asks, update_id, limit)
        now = int(time.time() * 1000)
        return {"lastUpdateId": update_id, "E": now, "T": now, "bids": body["bids"], "asks": body["asks"]}

    def depth_event(self, symbol: str, model: MarketModel, acc: DepthAcc, now_ms: int) -> dict[str, Any]:
        return {"e": "depthUpdate", "E": now_ms, "T": now_ms, "s": symbol,
                "U": acc.first, "u": acc.last, "pu": acc.prev,
                "b": [[self.px(model, p), self.qty(model, q)] for p, q in acc.bids.items()],
                "a": [[self.px(model, p), self.qty(model, q)] for p, q in acc.asks.items()]}

    def trade_event(self, kind: str, symbol: str, model: MarketModel, t: Trade, now_ms: int) -> dict[str, Any]:
        d = super().trade_event(kind, symbol, model, t, now_ms)
        d.pop("M", None)
        return d

    # ------------------------------------------------------------ REST
    def ticker(self, model: MarketModel, now_ms: int) -> dict[str, Any]:
        """The USD-M 24 h ticker: spot's without the book and previous-close fields."""
        d = super().ticker(model, now_ms)
        for k in ("prevClosePrice", "bidPrice", "bidQty", "askPrice", "askQty"):
            del d[k]
        return d

    def ticker_weight(self, n: int | None) -> int:
        return 40 if n is None else 1

    def depth_limit(self, ip: IpLimits, raw: str) -> int | web.Response:
        try:
            limit = int(raw)
        except ValueError:
            return self._error(ip, 400, -1100, "Illegal characters found in parameter 'limit'; "
                                               "legal range is '^[0-9]{1,20}$'.")
        if limit not in DEPTH_LIMITS:
            return self._error(ip, 400, -1130, "Data sent for parameter 'limit' is not valid.")
        return limit

    def depth_weight(self, limit: int) -> int:
        return usdm_depth_weight(limit)

    def symbol_info(self, model: MarketModel) -> dict[str, Any]:
        """One entry of the USD-M exchangeInfo ``symbols``, shaped like the real one."""
        spec = model.spec
        base = spec.symbol[:-4]
        tick = fmt(1, spec.price_decimals, PRICE_PRECISION.get(spec.symbol))
        step = fmt(1, spec.qty_decimals)
        return {
            "symbol": spec.symbol, "pair": spec.symbol, "contractType": "PERPETUAL",
            "deliveryDate": 4133404800000, "onboardDate": 1569398400000, "status": "TRADING",
            "maintMarginPercent": "2.5000", "requiredMarginPercent": "5.0000",
            "baseAsset": base, "quoteAsset": "USDT", "marginAsset": "USDT",
            "pricePrecision": PRICE_PRECISION.get(spec.symbol, spec.price_decimals),
            "quantityPrecision": spec.qty_decimals, "baseAssetPrecision": 8, "quotePrecision": 8,
            "underlyingType": "COIN", "underlyingSubType": [], "settlePlan": 0,
            "triggerProtect": "0.0500", "liquidationFee": "0.012500", "marketTakeBound": "0.05",
            "maxMoveOrderLimit": 10000,
            "filters": [
                {"filterType": "PRICE_FILTER", "minPrice": tick, "maxPrice": "4529764", "tickSize": tick},
                {"filterType": "LOT_SIZE", "minQty": step, "maxQty": "1000", "stepSize": step},
                {"filterType": "MARKET_LOT_SIZE", "minQty": step, "maxQty": "120", "stepSize": step},
                {"filterType": "MAX_NUM_ORDERS", "limit": 200},
                {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
                {"filterType": "MIN_NOTIONAL", "notional": "100"},
                {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0500", "multiplierDown": "0.9500",
                 "multiplierDecimal": "4"},
            ],
            "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT",
                           "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"],
            "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
            "permissionSets": ["GRID", "COPY"],
        }

    async def exchange_info(self, request: web.Request) -> web.Response:
        """The whole exchange (USD-M takes no symbol filter)."""
        ip = self._ip(request)
        refused = self._limit_check(request, self.exchange_info_weight)
        if refused is not None:
            return refused
        self.sim.count(f"{self.count_prefix}rest_exchange_info")
        body = {
            "timezone": "UTC", "serverTime": int(time.time() * 1000), "futuresType": "U_MARGINED",
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                 "limit": self.weight_limit},
                {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300},
            ],
            "exchangeFilters": [],
            "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}],
            "symbols": [self.symbol_info(m) for m in self.models.values()],
        }
        return _json(body, self._weight_headers(ip))
