"""Regenerate screenshots/*.svg from the running app against the simulator fleet: the
watchlist (top:12 markets), a market view, feeds & system and the help, at 120x40 and 80x24.

    .venv/bin/python scripts/screenshots.py
"""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

from obitui.app import ObituiApp
from obitui.config import load_config
from obitui.supervisor import Supervisor

OUT = Path(__file__).resolve().parent.parent / "screenshots"
SIZES = [(120, 40), (80, 24)]


async def shoot(sup: Supervisor, size: tuple[int, int]) -> None:
    app = ObituiApp(sup.cfg, sup, refresh_hz=8)
    tag = f"{size[0]}x{size[1]}"
    async with app.run_test(size=size) as pilot:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 5:      # let sparklines grow a little
            await pilot.pause(0.25)

        def save(name: str) -> None:
            app.save_screenshot(filename=f"{name}-{tag}.svg", path=str(OUT))
            print(OUT / f"{name}-{tag}.svg")

        save("watchlist")
        await pilot.press("enter")
        t0 = time.monotonic()
        while time.monotonic() - t0 < 4:      # the tape fills, the cross-venue line grows
            await pilot.pause(0.25)
        save("market")
        await pilot.press("f")
        await pilot.pause(1.5)
        save("feeds")
        await pilot.press("f1")
        await pilot.pause(0.3)
        save("help")


async def main() -> None:
    OUT.mkdir(exist_ok=True)
    for old in OUT.glob("main-*.svg"):
        old.unlink()
    sup = Supervisor(load_config(None))
    try:
        sup.launch(sim=True, faults=[], top=12)
        await asyncio.sleep(6)
        for size in SIZES:
            await shoot(sup, size)
    finally:
        sup.stop()


if __name__ == "__main__":
    asyncio.run(main())
