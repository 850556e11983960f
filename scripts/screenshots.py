"""Regenerate screenshots/*.svg from the running app against the simulator fleet.

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


async def shoot(sup: Supervisor, size: tuple[int, int], name: str, help_screen: bool = False) -> None:
    app = ObituiApp(sup.cfg, sup, refresh_hz=8)
    async with app.run_test(size=size) as pilot:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 6:      # let sparklines grow a little
            await pilot.pause(0.25)
        if help_screen:
            await pilot.press("f1")
            await pilot.pause(0.3)
        app.save_screenshot(filename=name, path=str(OUT))
        print(OUT / name)


async def main() -> None:
    OUT.mkdir(exist_ok=True)
    cfg = load_config(None)
    sup = Supervisor(cfg)
    try:
        sup.cfg = cfg.with_sim(*sup.start_simulator([], seed=1))
        sup.start()
        await asyncio.sleep(4)
        await shoot(sup, (120, 40), "main-120x40.svg")
        await shoot(sup, (80, 24), "main-80x24.svg")
        await shoot(sup, (120, 40), "help-120x40.svg", help_screen=True)
    finally:
        sup.stop()


if __name__ == "__main__":
    asyncio.run(main())
