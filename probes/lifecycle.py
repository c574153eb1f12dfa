"""Closing what a run left open when the process ends: normal exit, an uncaught exception,
Ctrl+C (SIGINT) or SIGTERM.

A Monitor that is never closed used to lose its tail (the records still queued, the last
half-second of the store) and to leave its I/O thread running into interpreter teardown, where
ZeroMQ's context could be destroyed under it (a rare SIGABRT, "terminate called without an
active exception"). Here every Monitor and transport registers a ``close(status)`` callback;
at exit they are closed newest first (a Monitor before the transport it owns), so queued
records are flushed and every thread is joined and every socket closed before Python tears
down modules.

The status recorded is what ended the process: ``finished`` for a normal exit, ``interrupted``
for KeyboardInterrupt (SIGINT) and SIGTERM, ``crashed`` for any other uncaught exception
(seen through ``sys.excepthook``, which runs before ``atexit`` handlers).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

Closer = Callable[[Any, str], None]

_open: dict[int, tuple[weakref.ref, Closer]] = {}
_order = 0
_lock = threading.Lock()
_installed = False
_exit_status = "finished"


def register(owner: Any, close: Closer) -> int:
    """Close ``owner`` with ``close(owner, status)`` at exit unless :func:`unregister`-ed
    first. Holds only a weak reference: a collected owner is simply skipped."""
    global _order
    _install()
    with _lock:
        _order += 1
        _open[_order] = (weakref.ref(owner), close)
        return _order


def unregister(token: int) -> None:
    with _lock:
        _open.pop(token, None)


def close_all(status: str) -> None:
    """Close every registered owner, newest first; never raises (it runs at exit)."""
    with _lock:
        items = sorted(_open.items(), reverse=True)
        _open.clear()
    for _, (ref, close) in items:
        owner = ref()
        if owner is None:
            continue
        with contextlib.suppress(Exception):  # at exit nothing may stop the others closing
            close(owner, status)


EXIT_JOIN_S = 20.0
"""How long exit waits, in all, for edgewatch's threads to finish after they were told to
stop. ``close`` itself waits 2 s; on a loaded machine a final flush can take longer, and a
thread still holding its sockets when Python's garbage collector terminates the ZeroMQ context
makes that wait forever (seen: a hang at exit) or abort."""


IO_THREADS = ("edgewatch-io", "edgewatch-rank")
"""The transports' I/O threads (stopped by close_all); other threads are not waited for."""


def _join_threads(seconds: float = EXIT_JOIN_S) -> None:
    deadline = time.monotonic() + seconds
    for thread in threading.enumerate():
        if thread.name.startswith(IO_THREADS) and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()))


def _at_exit() -> None:
    close_all(_exit_status)
    _join_threads()


def _excepthook(exc_type: type[BaseException], exc: BaseException, tb: Any) -> None:
    global _exit_status
    _exit_status = "interrupted" if issubclass(exc_type, KeyboardInterrupt) else "crashed"
    _previous_excepthook(exc_type, exc, tb)


def _on_sigterm(signum: int, frame: Any) -> None:
    """Flush and finalise as ``interrupted``, then die of SIGTERM as the sender expects."""
    close_all("interrupted")
    _join_threads()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


_previous_excepthook = sys.excepthook


def _install() -> None:
    """Once per process: the atexit handler, the excepthook, and a SIGTERM handler when the
    program has none of its own (only the main thread may set one)."""
    global _installed, _previous_excepthook
    if _installed:
        return
    _installed = True
    atexit.register(_at_exit)
    _previous_excepthook = sys.excepthook
    sys.excepthook = _excepthook
    if threading.current_thread() is threading.main_thread():
        try:
            if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
                signal.signal(signal.SIGTERM, _on_sigterm)
        except (ValueError, OSError):  # embedded interpreters may forbid it
            pass
