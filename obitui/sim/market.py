"""Seeded market model: the simulator's true book, one per (venue, symbol).

The book is integer ticks -> integer lots on two SortedDicts (an implementation independent of
``obitui.core.book``, so comparing a consumer's book with this truth proves something). Each
``step()`` is one market event: level changes concentrated near the top of book, sometimes a
trade that consumes the best level, sometimes a level inside the spread, deep adds and
deletes that keep each side near its target depth. The sequence of steps depends only on the
seed. A bounded history of undo records lets ``book_at`` rebuild the book at any recent update;
a record is one flat int64 array (last id, seq, then side, ticks, old lots per change): ~180
bytes a step, where tuples of tuples took ~570 (hundreds of markets keep thousands each).
"""
from __future__ import annotations

import random
from array import array
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from sortedcontainers import SortedDict

BID, ASK = 0, 1


@dataclass(frozen=True, slots=True)
class SymbolSpec:
    symbol: str
    price_decimals: int = 2      # tick = 10**-price_decimals
    qty_decimals: int = 5        # lot = 10**-qty_decimals
    start_price: int = 2_700_000  # in ticks (27000.00)
    depth: int = 2000            # target levels per side
    typical_lots: int = 0        # a typical order in lots (0: 0.01 units); the tail is heavy
    trade_share: float = 0.12    # the share of steps that carry a trade


@dataclass(slots=True)
class Day:
    """A market's rolling 24 h figures for the tickers (ticks; volumes in lots and ticks*lots):
    the listing's figures at start, every simulated trade added."""
    open: int
    high: int
    low: int
    base: int = 0
    quote: int = 0
    count: int = 0               # trades


@dataclass(slots=True)
class Trade:
    trade_id: int
    price: int        # ticks
    lots: int
    buyer_is_maker: bool   # True: the taker sold (Binance "m")


@dataclass(slots=True)
class Step:
    first_id: int                 # Binance U
    last_id: int                  # Binance u
    seq: int                      # Bitget seq (grows, not by +1)
    prev_seq: int                 # Bitget pseq
    changes: list[tuple[int, int, int]] = field(default_factory=list)   # (side, ticks, new lots)
    trades: list[Trade] = field(default_factory=list)
    ts_ms: int = 0
    prev_id: int = 0              # the previous step's last id (Binance USD-M `pu` of a push)


class MarketModel:
    def __init__(self, spec: SymbolSpec, seed: int, history: int = 100_000,
                 first_update_id: int | None = None, changes_per_step: int = 0,
                 id_jump: int = 0, day: Day | None = None) -> None:
        self.spec = spec
        self.changes_per_step = changes_per_step    # 0: 1-4 level changes a step
        self.rng = random.Random(seed)
        # id_jump > 0: update ids are not contiguous between steps (Binance USD-M: the engine's
        # ids are shared by every symbol): a step's first id is the previous step's last + 1 +
        # a jump in [1, id_jump], drawn from a generator of its own (the market path is the
        # same as without jumps)
        self.id_jump = id_jump
        self._id_rng = random.Random(seed * 31 + 7) if id_jump else None
        self.bids: SortedDict = SortedDict()
        self.asks: SortedDict = SortedDict()
        self.update_id = first_update_id if first_update_id is not None else 10_000_000 + self.rng.randrange(10**6)
        self.seq = 400_000_000_000 + self.rng.randrange(10**9)
        # the day's trades (``day.count``) come before the first simulated one
        self.trade_id = 1_000_000 + self.rng.randrange(10**6) + (day.count if day else 0)
        self.steps = 0
        self.first_keys = (self.update_id, self.seq)   # the book before any step has these ids
        # undo log, a record a step: [last_id, seq, side, ticks, old lots, side, ticks, ...]
        self.history: deque[Sequence[int]] = deque(maxlen=history)
        mid = spec.start_price
        for i in range(spec.depth):
            if mid - 1 - i > 0:     # a price of a few ticks has fewer bids (never 0 or below)
                self.bids[mid - 1 - i] = self._lots()
            self.asks[mid + 1 + i] = self._lots()
        self.recent_trades: deque[Trade] = deque(maxlen=50)
        self.day = day or Day(mid, mid, mid)

    # ------------------------------------------------------------ model
    def _lots(self) -> int:
        # mostly around the typical order (0.01 units by default), a heavy tail
        typical = self.spec.typical_lots or 10 ** max(0, self.spec.qty_decimals - 2)
        return max(1, int(self.rng.paretovariate(1.3) * typical))

    def best_bid(self) -> int:
        return self.bids.peekitem(-1)[0]

    def best_ask(self) -> int:
        return self.asks.peekitem(0)[0]

    def _set(self, side: int, ticks: int, lots: int, undo: list[tuple[int, int, int]],
             changes: list[tuple[int, int, int]]) -> None:
        book = self.bids if side == BID else self.asks
        old = book.get(ticks, 0)
        if old == lots:
            return
        undo.append((side, ticks, old))
        if lots:
            book[ticks] = lots
        else:
            del book[ticks]
        changes.append((side, ticks, lots))

    def step(self, ts_ms: int = 0) -> Step:
        rng = self.rng
        undo: list[tuple[int, int, int]] = []
        changes: list[tuple[int, int, int]] = []
        trades: list[Trade] = []
        r = rng.random()
        share = self.spec.trade_share
        if r < share:
            self._trade(undo, changes, trades)
        elif r < share + 0.08:
            self._inside_spread(undo, changes)
        n = self.changes_per_step or rng.randint(1, 4)
        for _ in range(n):
            self._level_change(undo, changes)
        self._keep_depth(undo, changes)
        self._tighten(undo, changes)
        if not changes:  # every step carries at least one change
            self._level_change(undo, changes, force=True)
        if not changes:
            # the forced change drew the size a level already had (markets whose typical order
            # is one lot) or a price off the book: one more lot at the best ask. A step without
            # changes would be a diff with U = u + 1, which a venue never sends
            ticks = self.best_ask()
            self._set(ASK, ticks, self.asks[ticks] + 1, undo, changes)
        prev_id = self.update_id
        first = prev_id + 1 + (self._id_rng.randint(1, self.id_jump) if self._id_rng else 0)
        self.update_id = first + len(changes) - 1
        prev_seq = self.seq
        self.seq += rng.randint(1, 60)
        self.steps += 1
        record = [self.update_id, self.seq]
        for change in undo:
            record += change
        try:
            self.history.append(array("q", record))
        except OverflowError:       # a quantity past int64 (a memecoin's tail): kept as it is
            self.history.append(tuple(record))
        if trades:
            day = self.day
            for t in trades:
                self.recent_trades.append(t)
                day.high, day.low = max(day.high, t.price), min(day.low, t.price)
                day.base += t.lots
                day.quote += t.lots * t.price
                day.count += 1
        return Step(first, self.update_id, self.seq, prev_seq, changes, trades, ts_ms, prev_id)

    def _trade(self, undo: list, changes: list, trades: list) -> None:
        rng = self.rng
        taker_buys = rng.random() < 0.5
        side = ASK if taker_buys else BID
        book = self.asks if taker_buys else self.bids
        if len(book) < 2:
            return
        ticks, lots = book.peekitem(0) if taker_buys else book.peekitem(-1)
        take = lots if rng.random() < 0.3 else max(1, int(lots * rng.random()))
        self.trade_id += 1
        trades.append(Trade(self.trade_id, ticks, take, not taker_buys))
        self._set(side, ticks, lots - take, undo, changes)

    def _inside_spread(self, undo: list, changes: list) -> None:
        bb, ba = self.best_bid(), self.best_ask()
        if ba - bb <= 1:
            return
        if self.rng.random() < 0.5:
            self._set(BID, bb + 1, self._lots(), undo, changes)
        else:
            self._set(ASK, ba - 1, self._lots(), undo, changes)

    def _tighten(self, undo: list, changes: list) -> None:
        """Liquidity providers refill a spread that trades and cancels opened up."""
        while self.best_ask() - self.best_bid() > 3:
            self._inside_spread(undo, changes)

    def _level_change(self, undo: list, changes: list, force: bool = False) -> None:
        rng = self.rng
        side = BID if rng.random() < 0.5 else ASK
        deep = rng.random() < 0.05
        depth = rng.randrange(self.spec.depth) if deep else min(int(rng.expovariate(0.25)), self.spec.depth)
        if side == BID:
            ticks = self.best_bid() - depth
            if ticks <= 0 or ticks >= self.best_ask():
                return
        else:
            ticks = self.best_ask() + depth
            if ticks <= self.best_bid():
                return
        book = self.bids if side == BID else self.asks
        delete = rng.random() < 0.2 and len(book) > 10 and not force
        self._set(side, ticks, 0 if delete else self._lots(), undo, changes)

    def _keep_depth(self, undo: list, changes: list) -> None:
        target = self.spec.depth
        for side, book in ((BID, self.bids), (ASK, self.asks)):
            if len(book) > target + 50:
                worst = book.peekitem(0)[0] if side == BID else book.peekitem(-1)[0]
                self._set(side, worst, 0, undo, changes)
            elif len(book) < target - 50:
                worst = book.peekitem(0)[0] if side == BID else book.peekitem(-1)[0]
                if side == BID and worst <= 1:
                    continue
                self._set(side, worst - 1 if side == BID else worst + 1, self._lots(), undo, changes)

    # ------------------------------------------------------------ truth
    def levels(self, side: int, n: int | None = None) -> list[tuple[int, int]]:
        """Best-first (ticks, lots) of a side."""
        book = self.bids if side == BID else self.asks
        keys = book.keys()
        if side == BID:
            it = reversed(keys) if n is None else book.islice(max(0, len(book) - n), reverse=True)
        else:
            it = iter(keys) if n is None else book.islice(0, n)
        return [(k, book[k]) for k in it]

    def book_at(self, update_id: int | None = None, seq: int | None = None, floor: bool = False
                ) -> tuple[dict[int, int], dict[int, int]] | None:
        """(bids, asks) as they were right after the step ending at ``update_id`` (Binance u)
        or with Bitget ``seq``; None if that is older than the history or not a step end
        (``floor``: an id between two step ends means the book after the earlier one, as a
        Bitget v3 snapshot's seq may lie between two updates)."""
        bids, asks = dict(self.bids), dict(self.asks)
        key_now = self.update_id if seq is None else self.seq
        want = key_now if update_id is None and seq is None else (update_id if seq is None else seq)
        if want == key_now:
            return bids, asks
        if want > key_now:
            return None
        for record in reversed(self.history):
            key = record[0] if seq is None else record[1]
            if key == want:
                return bids, asks
            if key < want:
                return (bids, asks) if floor else None
            for j in range(len(record) - 3, 1, -3):
                side, ticks, old = record[j], record[j + 1], record[j + 2]
                book = bids if side == BID else asks
                if old:
                    book[ticks] = old
                else:
                    book.pop(ticks, None)
        if self.steps == len(self.history):     # the whole history undone: the first book
            key = self.first_keys[0 if seq is None else 1]
            if want == key or (floor and want > key):
                return bids, asks
        return None


def fmt(value: int, decimals: int, pad_to: int | None = None) -> str:
    """Integer units of 10**-decimals as a decimal string, padded to ``pad_to`` decimals."""
    s = str(value).rjust(decimals + 1, "0")
    text = f"{s[:-decimals]}.{s[-decimals:]}" if decimals else s
    if pad_to is not None and pad_to > decimals:
        text += ("" if decimals else ".") + "0" * (pad_to - decimals)
    return text
