"""The simulator's markets: the three real ones (BTCUSDT, ETHUSDT, PEPEUSDT) first, then 397
made-up ones by falling volume (``JOPUUSDT``, ``DSOUSDT``, ... ``JORABTC``, ``JUDOEUR``), one
``Listing`` each: which venue APIs list it, its symbol spec on each (a price from 0.00005 to
40,000 USDT, a tick of ~1e-4 of it, a step worth 0.01-1 USDT), its activity and its 24 h
figures. ``top``/``preset`` rank them as ``--symbols top:N`` does.

The listing is drawn from a fixed seed (``UNIVERSE_SEED``), not from ``SimConfig.seed``: a
symbol names the same market under every ``--seed`` (configs and tests name them); the seed
only changes the markets' paths.

What differs between markets, on purpose:
- quote currency: most are quoted in USDT, some in BTC, ETH, EUR or USDC;
- venues: most USDT markets are listed on Binance spot and Bitget, some on one of them only;
  about half of the Binance USDT ones have a USD-M perpetual;
- 24 h volume: log-spread from ~6e8 down to ~1e4 USDT, each market at least 1 % below the
  previous one (a ranking by volume has no near ties), split between the venues by a share
  of its own (the ranking on one venue is not the ranking on the sum);
- activity: steps per second relative to ``SimConfig.rate`` (1.0: the configured rate, as the
  real three keep). Busy at the head of the volume ranking (~11x), quiet below (~0.85x, then
  lower in the tail); Binance at 0.45-0.8 of Bitget's, USD-M at half of Binance's. At the
  default rate (20 steps/s) the 150 most traded markets quoted in USDT and listed on both venues
  step ~6,600 times a second on Bitget (one books message each) and ~4,000 on Binance spot
  (depth@100ms: at most 10 messages a second a stream, ~1,150 in all): ~7,750 depth messages
  a second; made-up markets trade on 20 % of their steps (the real three on 12 %): ~2,100
  trades a second. ``activity_totals`` computes these figures.
"""
from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache

from obitui.sim.market import Day, SymbolSpec

UNIVERSE_SEED = 19
MADE_UP = 397                   # made-up markets (400 with the real three)
SPOT_VENUES = ("binance", "bitget")
VENUES = ("binance", "binance-usdm", "bitget")
# a quote currency's price in USDT (a BTC-quoted price is the USDT price / 27000)
QUOTE_USDT = {"USDT": 1.0, "USDC": 1.0, "BTC": 27_000.0, "ETH": 3_000.0, "EUR": 1.08}
MIN_TICKS = 4000                # a made-up market's price is at least this many ticks
MINOR_TRADE_SHARE = 0.2         # made-up markets trade on this share of their steps
# bases a made-up market must not take: the real ones, the quotes, names tests use as unknown,
# and coins of the recordings in tests/data
RESERVED = frozenset({"BTC", "ETH", "PEPE", "USDT", "USDC", "USD", "EUR", "NOPE", "FOO", "BAR",
                      "SUSHI", "CTK", "UNI", "DASH", "AKRO", "NKN", "KEEP", "EOS", "GOG", "AVAX",
                      "VVS", "SUN", "HOT", "STG", "CULT", "LRC", "BLZ", "MAV", "RUNE", "CELR"})


@dataclass(frozen=True, slots=True)
class Listing:
    """One market of the simulated exchanges."""
    symbol: str
    base: str
    quote: str
    specs: Mapping[str, SymbolSpec]     # by venue API listing it: binance, binance-usdm, bitget
    activity: Mapping[str, float]       # steps/s relative to SimConfig.rate, by venue API
    volume: Mapping[str, float]         # 24 h volume in the quote currency, by venue API
    change: float                       # 24 h price change: 0.0123 is +1.23 %
    real: bool = False                  # one of the three real markets

    @property
    def venues(self) -> tuple[str, ...]:
        return tuple(self.specs)

    def usdt_volume(self, venues: Iterable[str] = SPOT_VENUES) -> float:
        """The 24 h volume in USDT summed over ``venues`` (those listing it)."""
        return sum(self.volume.get(v, 0.0) for v in venues) * QUOTE_USDT[self.quote]

    def day(self, venue: str) -> Day:
        """The 24 h figures a venue's model starts with (ticks, lots, ticks*lots)."""
        spec = self.specs[venue]
        last = spec.start_price
        open_ = max(1, round(last / (1 + self.change)))
        swing = abs(self.change) * 0.25 + 0.01
        high = round(max(open_, last) * (1 + swing))
        low = max(1, round(min(open_, last) * (1 - swing)))
        price = last / 10 ** spec.price_decimals
        volume = self.volume[venue]
        lots = int(volume / price * 10 ** spec.qty_decimals)
        quote = int(volume * 10 ** (spec.price_decimals + spec.qty_decimals))
        typical = spec.typical_lots or 10 ** max(0, spec.qty_decimals - 2)
        return Day(open_, high, low, lots, quote, max(1, lots // (4 * typical)))


def _real() -> list[Listing]:
    # PEPEUSDT: a memecoin's extremes, as listed: a price of 0.00001234 (8 decimals) and
    # whole-unit quantities around 1e10 with a tail past 1e11, which 8 decimals cannot hold in
    # an int64. USD-M: coarser quantities (BTCUSDT: tick 0.10, step 0.001)
    pepe = SymbolSpec("PEPEUSDT", 8, 0, 1234, typical_lots=10**10)
    one = {"binance": 1.0, "binance-usdm": 1.0, "bitget": 1.0}
    return [
        Listing("BTCUSDT", "BTC", "USDT",
                {"binance": SymbolSpec("BTCUSDT", 2, 5, 2_700_000),
                 "binance-usdm": SymbolSpec("BTCUSDT", 1, 3, 270_000),
                 "bitget": SymbolSpec("BTCUSDT", 2, 6, 2_700_000)},
                one, {"binance": 1.6e9, "binance-usdm": 1.1e10, "bitget": 6.1e8}, 0.0123, True),
        Listing("ETHUSDT", "ETH", "USDT",
                {"binance": SymbolSpec("ETHUSDT", 2, 4, 300_000),
                 "binance-usdm": SymbolSpec("ETHUSDT", 2, 3, 300_000),
                 "bitget": SymbolSpec("ETHUSDT", 2, 4, 300_000)},
                one, {"binance": 9.1e8, "binance-usdm": 6.2e9, "bitget": 3.4e8}, -0.0081, True),
        Listing("PEPEUSDT", "PEPE", "USDT", {"binance": pepe, "binance-usdm": pepe, "bitget": pepe},
                one, {"binance": 2.2e8, "binance-usdm": 7.5e8, "bitget": 9.5e7}, 0.0542, True),
    ]


def _base_name(rng: random.Random, taken: set[str]) -> str:
    consonants, vowels = "BCDFGHJKLMNPQRSTVWXZ", "AEIOUY"
    while True:
        n = rng.choice((3, 3, 4, 4, 4, 5))
        if rng.random() < 0.5:      # pronounceable: consonant, vowel, ...
            name = "".join(rng.choice(consonants if i % 2 == 0 else vowels) for i in range(n))
        else:
            name = "".join(rng.choice("ABCDEFGHIJKLMNOPRSTUVWXYZ") for _ in range(n))
        if name not in taken and name not in RESERVED and not any(q in name for q in QUOTE_USDT):
            taken.add(name)
            return name


def _spec(symbol: str, price: float, usd_price: float, qty_extra: int, notional: float) -> SymbolSpec:
    """A spec whose tick is ~1e-4 of the price (at most 8 decimals) and whose step is worth
    ~0.01-1 USDT; a typical order is worth ``notional`` USDT."""
    price_decimals = min(8, max(0, 4 - math.floor(math.log10(price))))
    start = round(price * 10 ** price_decimals)
    qty_decimals = min(8, max(0, round(math.log10(usd_price)) + 1 + qty_extra))
    lots = max(1, round(notional / (usd_price * 10 ** -qty_decimals)))
    return SymbolSpec(symbol, price_decimals, qty_decimals, start, typical_lots=lots,
                      trade_share=MINOR_TRADE_SHARE)


def _made_up(real: list[Listing]) -> list[Listing]:
    rng = random.Random(UNIVERSE_SEED)
    taken = {r.base for r in real}
    symbols = {r.symbol for r in real}
    usdt_bases: list[tuple[str, float]] = []     # (base, USDT price) of the USDT markets so far
    out: list[Listing] = []
    volume = 6.0e8
    for k in range(MADE_UP):
        if k:
            volume /= math.exp(rng.uniform(0.01, 0.045))    # at least 1 % below the previous one
        quote = "USDT" if rng.random() < 0.83 or not usdt_bases else \
            rng.choice(("BTC", "BTC", "ETH", "EUR", "USDC"))
        if quote == "USDT":
            base, usd_price = _base_name(rng, taken), 10 ** rng.uniform(-4.3, 4.6)
        else:
            base, usd_price = rng.choice(usdt_bases)      # a coin also quoted in USDT
            if usd_price / QUOTE_USDT[quote] < MIN_TICKS * 1e-8:   # too cheap for this quote
                quote = rng.choice(("EUR", "USDC"))
            if base + quote in symbols:                   # that pair exists: a coin of its own
                base = _base_name(rng, taken)
        symbol = base + quote
        symbols.add(symbol)
        r = rng.random()
        if quote == "USDT":
            usdt_bases.append((base, usd_price))
            venues = SPOT_VENUES if r < 0.75 else ("binance",) if r < 0.9 else ("bitget",)
        else:
            venues = SPOT_VENUES if r < 0.4 else ("binance",) if r < 0.8 else ("bitget",)
        price = usd_price / QUOTE_USDT[quote]
        notional = min(3000.0, max(5.0, volume * 4e-8))
        specs = {"binance": _spec(symbol, price, usd_price, 0, notional)} if "binance" in venues else {}
        if quote == "USDT" and "binance" in venues and rng.random() < 0.5:
            specs["binance-usdm"] = _spec(symbol, price, usd_price, -1, notional)
        if "bitget" in venues:
            specs["bitget"] = _spec(symbol, price, usd_price, 1 if rng.random() < 0.3 else 0, notional)
        # busy at the head of the ranking, quiet below, quieter in the tail
        quiet = 0.85 if k < 240 else 0.85 * math.exp(-(k - 240) / 80)
        bitget = (11.0 * math.exp(-k / 30) + quiet) * rng.uniform(0.8, 1.25)
        binance = bitget * rng.uniform(0.45, 0.8)
        activity = {"binance": binance, "binance-usdm": binance * 0.5, "bitget": bitget}
        # Binance's share of the spot volume (futures trade 2.5 times Binance spot's)
        share = rng.uniform(0.3, 0.85) if len(venues) == 2 else float(venues == ("binance",))
        split = {"binance": share, "binance-usdm": 2.5 * share, "bitget": 1.0 - share}
        out.append(Listing(symbol, base, quote, specs, {v: activity[v] for v in specs},
                           {v: volume * split[v] / QUOTE_USDT[quote] for v in specs},
                           round(rng.gauss(0.0, 0.04), 4)))
    return out


@cache
def universe() -> tuple[Listing, ...]:
    """Every market: the three real ones, then the made-up ones by falling volume."""
    real = _real()
    return tuple(real + _made_up(real))


@cache
def listings() -> dict[str, Listing]:
    return {m.symbol: m for m in universe()}


def venue_specs(venue: str) -> tuple[SymbolSpec, ...]:
    """The specs of every market a venue API lists, in universe order."""
    return tuple(m.specs[venue] for m in universe() if venue in m.specs)


def qualifies(m: Listing, venues: Iterable[str] = SPOT_VENUES) -> bool:
    """Quoted in USDT and listed on every one of ``venues``."""
    return m.quote == "USDT" and all(v in m.specs for v in venues)


def ranked(venues: Iterable[str] = SPOT_VENUES) -> list[Listing]:
    """Every market, most traded first (24 h USDT volume summed over ``venues``), ties by name."""
    vs = tuple(venues)
    return sorted(universe(), key=lambda m: (-m.usdt_volume(vs), m.symbol))


def top(n: int, venues: Iterable[str] = SPOT_VENUES) -> list[str]:
    """The ``n`` most traded markets quoted in USDT and listed on every one of ``venues``, at
    the listing's figures (what ``obitui.feeds.universe.top_symbols`` finds on a fresh
    simulator serving them)."""
    vs = tuple(venues)
    return [m.symbol for m in ranked(vs) if qualifies(m, vs)][:n]


def preset(n: int, venues: Iterable[str] = SPOT_VENUES) -> tuple[str, ...]:
    """``--symbols top:N`` for the simulator: the markets down to the N-th that qualifies (see
    ``top``), with those ranked among them that do not (another quote, one venue only), so a
    client picking the top N from the venues' lists has something to leave out."""
    vs = tuple(venues)
    out: list[str] = []
    found = 0
    for m in ranked(vs):
        if found >= n:
            break
        out.append(m.symbol)
        found += qualifies(m, vs)
    return tuple(out)


def activity_totals(symbols: Iterable[str], rate: float = 20.0) -> dict[str, float]:
    """The expected traffic of these markets at ``rate``: steps/s by venue API, depth messages/s
    (Bitget books: one a step; Binance spot depth@100ms: at most 10 a second a stream) and
    trades/s of the spot venues."""
    by = listings()
    steps = {v: 0.0 for v in VENUES}
    depth = trades = 0.0
    for s in symbols:
        m = by[s]
        for v, a in m.activity.items():
            r = rate * a
            steps[v] += r
            if v == "bitget":
                depth += r
            elif v == "binance":
                # a push goes out with the first step 100 ms after the previous push
                depth += r / math.ceil(0.1 * r) if r >= 10 else r
            if v in SPOT_VENUES:
                trades += r * m.specs[v].trade_share
    return {**{f"steps_{v}": x for v, x in steps.items()}, "depth_msgs": depth, "trades": trades}
