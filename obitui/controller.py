"""What the UI drives: the supervisor in production, or a stats block some other writer fills
(tests, or attaching to a running headless fleet). Both speak the same small protocol."""
from __future__ import annotations

from obitui.config import Config
from obitui.core.ring import Ring
from obitui.core.stats import Command, StatsBlock


def command_by_label(cfg: Config, stats: StatsBlock, label: str, cmd: Command) -> int:
    """Post ``cmd`` to the feed labelled ``label``; returns the command's sequence number."""
    for i, f in enumerate(cfg.feeds):
        if f.label == label:
            return stats.send_command(i, cmd)
    raise KeyError(f"no feed labelled {label!r}")


class StatsController:
    """Reads a stats block and its rings; sends control words. Starts no process."""

    def __init__(self, cfg: Config, stats: StatsBlock, ring_names: list[str] | None = None) -> None:
        self.cfg = cfg
        self.stats: StatsBlock | None = stats
        self.monitors = [Ring.attach(n, role="monitor") for n in (ring_names or [])]

    def command(self, label: str, cmd: Command) -> int:
        assert self.stats is not None
        return command_by_label(self.cfg, self.stats, label, cmd)

    def pids(self) -> dict[str, int]:
        return {}

    def ring_fill(self) -> list[tuple[float, int]]:
        return [(m.fill(), m.drops) for m in self.monitors]

    def ring_high_water(self) -> list[float]:
        return [m.high_water / m.capacity for m in self.monitors]

    def poll(self) -> list[str]:
        return []

    def stop(self) -> None:
        for m in self.monitors:
            m.close()
        self.monitors.clear()
