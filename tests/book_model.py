"""Reference order book for tests: a plain dict keyed by Decimal, no cleverness."""
from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from typing import Any


class ModelBook:
    def __init__(self) -> None:
        self.bids: dict[Decimal, tuple[str, str]] = {}
        self.asks: dict[Decimal, tuple[str, str]] = {}

    def snapshot(self, bids: list[Any], asks: list[Any]) -> None:
        self.bids.clear()
        self.asks.clear()
        self.apply(bids, asks)

    def apply(self, bids: list[Any], asks: list[Any]) -> None:
        for side, levels in ((self.bids, bids), (self.asks, asks)):
            for lvl in levels:
                p, q = str(lvl[0]), str(lvl[1])
                if Decimal(q) == 0:
                    side.pop(Decimal(p), None)
                else:
                    side[Decimal(p)] = (p, q)

    def top(self, n: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        b = [self.bids[k] for k in sorted(self.bids, reverse=True)[:n]]
        a = [self.asks[k] for k in sorted(self.asks)[:n]]
        return b, a

    def obi(self, n: int) -> float:
        b, a = self.top(n)
        sb = sum((Decimal(q) for _, q in b), Decimal(0))
        sa = sum((Decimal(q) for _, q in a), Decimal(0))
        if sb + sa == 0:
            return 0.0
        return float(Fraction(sb - sa) / Fraction(sb + sa))
