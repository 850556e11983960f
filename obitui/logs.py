"""One logging setup for every process of a run (supervisor, feeds, engine, simulator).

Headless runs log to stderr: one JSON object per line with ``--json`` (contract: ``ts``, ``level``,
``proc``, ``logger``, ``msg``, and ``exc`` when a traceback is attached), plain text otherwise.
With the UI, every process appends to one log file (:func:`ui_log_path`), which the supervisor
rotates by size (:func:`rotate`: ``obitui.log`` -> ``obitui.log.1`` ..., ROTATE_KEEP files
kept); every process writes through a handler that reopens the file once it was moved.
Children receive the parent's :class:`LogSpec` and call :func:`configure` before anything else
logs."""
from __future__ import annotations

import json
import logging
import logging.handlers
import os
import sys
from dataclasses import dataclass
from pathlib import Path

TEXT_FORMAT = "%(asctime)s {proc} %(name)s %(levelname)s %(message)s"
ROTATE_BYTES = 10 << 20      # the UI log file is rotated past this size
ROTATE_KEEP = 3              # obitui.log.1 .. .3 are kept


def ui_log_path() -> Path:
    """Where the UI's processes log: $XDG_STATE_HOME/obitui/obitui.log (by default
    ~/.local/state/obitui/obitui.log)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "obitui" / "obitui.log"


def rotate(path: str | Path, max_bytes: int = ROTATE_BYTES, keep: int = ROTATE_KEEP) -> bool:
    """Rotate ``path`` when it is larger than ``max_bytes``: path.{keep-1} -> path.{keep}, ...,
    path -> path.1 (the oldest is dropped). The writers reopen the file on their next line.
    Returns whether it rotated; an error (a file gone meanwhile) is logged, not raised."""
    p = Path(path)
    try:
        if p.stat().st_size <= max_bytes:
            return False
        for i in range(keep - 1, 0, -1):
            older = Path(f"{p}.{i}")
            if older.exists():
                os.replace(older, f"{p}.{i + 1}")
        os.replace(p, f"{p}.1")
    except FileNotFoundError:
        return False
    except OSError as exc:
        logging.getLogger("obitui.logs").warning("cannot rotate %s: %s", p, exc)
        return False
    logging.getLogger("obitui.logs").info("log rotated (%s past %d MiB, %d kept)", p, max_bytes >> 20, keep)
    return True


@dataclass(frozen=True)
class LogSpec:
    level: int = logging.INFO
    json: bool = False
    file: str | None = None


class JsonLogFormatter(logging.Formatter):
    def __init__(self, proc: str = "") -> None:
        super().__init__()
        self.proc = proc

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": round(record.created, 3), "level": record.levelname.lower(), "proc": self.proc,
               "logger": record.name, "msg": record.getMessage()}
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        return json.dumps(out)


def configure(spec: LogSpec, proc: str) -> None:
    """Route this process's logging (and Python warnings) as ``spec`` says; ``proc`` names the
    process in every line (``supervisor``, ``engine``, ``feed Bi-OB``, ``sim``)."""
    handler: logging.Handler
    # a file may be rotated under us by the supervisor: reopen it when it was moved
    handler = (logging.handlers.WatchedFileHandler(spec.file) if spec.file
               else logging.StreamHandler(sys.stderr))
    handler.setFormatter(JsonLogFormatter(proc) if spec.json else
                         logging.Formatter(TEXT_FORMAT.format(proc=proc.replace("%", "%%"))))
    root = logging.getLogger()
    for old in root.handlers:
        old.close()
    root.handlers[:] = [handler]
    root.setLevel(spec.level)
    logging.captureWarnings(True)
