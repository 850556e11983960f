"""One logging setup for every process of a run (supervisor, feeds, engine, simulator).

Headless runs log to stderr: one JSON object per line with ``--json`` (contract: ``ts``, ``level``,
``proc``, ``logger``, ``msg``, and ``exc`` when a traceback is attached), plain text otherwise.
With the UI, every process appends to one log file. Children receive the parent's
:class:`LogSpec` and call :func:`configure` before anything else logs."""
from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass

TEXT_FORMAT = "%(asctime)s {proc} %(name)s %(levelname)s %(message)s"


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
    handler = logging.FileHandler(spec.file) if spec.file else logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter(proc) if spec.json else
                         logging.Formatter(TEXT_FORMAT.format(proc=proc.replace("%", "%%"))))
    root = logging.getLogger()
    for old in root.handlers:
        old.close()
    root.handlers[:] = [handler]
    root.setLevel(spec.level)
    logging.captureWarnings(True)
