"""No process of obitui outlives its supervisor, whatever kills the supervisor (SIGKILL included).

Two mechanisms, both armed by the child itself as the first thing it does:

- The kernel's parent-death signal (``prctl(PR_SET_PDEATHSIG)``): when the thread that forked the
  child ends, the child gets SIGKILL. It is armed after the fork, so a parent that died before
  that is caught by the usual race check: the parent pid is no longer the one expected (the
  child was re-parented to init or a subreaper), and the child exits at once.
- For a child in a session of its own (the simulator), the same signal plus a watch on the
  supervisor's pid (:func:`watch_parent`), which also covers a supervisor that forked it from a
  thread that has since ended.

Children of the fleet start through :func:`run_child`: it arms the lifeline, names the process
(``obitui feed Bi-OB`` in ps/top), sets up logging for the process, and only then imports the
module of the real entry point, so nothing heavy runs before the lifeline holds.
multiprocessing's resource tracker needs nothing: it exits when the last holder of its pipe (the
supervisor and the fleet's children) is gone.
"""
from __future__ import annotations

import ctypes
import importlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

PR_SET_PDEATHSIG = 1

log = logging.getLogger("obitui.lifeline")


def die_with_parent(parent_pid: int, sig: int = signal.SIGKILL) -> None:
    """Ask the kernel for ``sig`` when the parent dies, then check the parent is still
    ``parent_pid``; if it is gone already, exit now (status 1)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG): {os.strerror(err)}")
    if os.getppid() != parent_pid:
        os._exit(1)


def parent_alive(parent_pid: int) -> bool:
    return os.getppid() == parent_pid


def watch_parent(parent_pid: int, on_gone: Callable[[], None], every: float = 0.25) -> threading.Thread:
    """A daemon thread that calls ``on_gone`` once the parent is no longer ``parent_pid``."""
    def watch() -> None:
        while parent_alive(parent_pid):
            time.sleep(every)
        log.warning("the supervisor (pid %d) is gone: stopping", parent_pid)
        on_gone()

    t = threading.Thread(target=watch, name="parent-watch", daemon=True)
    t.start()
    return t


def set_title(title: str) -> None:
    """The process title shown by ps/top/htop (``obitui feed Bi-OB``); best effort."""
    try:
        import setproctitle
    except ImportError:
        return
    setproctitle.setproctitle(title)


def run_child(parent_pid: int, title: str, entry: str, log_spec: Any, *args: Any, **kwargs: Any) -> None:
    """The entry of every fleet child: lifeline, title, logging, then ``entry`` (``module:function``)
    with ``args``/``kwargs``. An exception that ends the child is logged (in the process's log
    format, JSON with ``--json``) and becomes exit status 1."""
    die_with_parent(parent_pid)
    set_title(title)
    from obitui.logs import configure
    configure(log_spec, title.removeprefix("obitui "))
    module, func = entry.split(":")
    try:
        getattr(importlib.import_module(module), func)(*args, **kwargs)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except Exception:
        logging.getLogger("obitui").exception("%s ended with an error", title)
        logging.shutdown()
        raise SystemExit(1) from None
    finally:
        sys.stdout.flush()
