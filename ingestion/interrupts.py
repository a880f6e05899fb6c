"""Ctrl-C that a run cannot lose.

CPython raises KeyboardInterrupt wherever the main thread happens to be when it handles SIGINT.
Raised inside a ``__del__`` or another finaliser it is printed as "Exception ignored" and lost:
an ingestion run went on and published a new version after Ctrl-C (seen in the test suite
under load). The entry point installs ``install_handler``, which also records the request, and
the run checks the record at safe points (each document, before publishing) with
``raise_if_interrupted``.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

_requested = threading.Event()


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    _requested.set()
    raise KeyboardInterrupt


def install_handler() -> None:
    """Record every SIGINT, then raise KeyboardInterrupt as Python's own handler does. Call from
    the main thread of an entry point (signal handlers can only be set there). A SIGINT the
    process was started ignoring (a background job of a script, ``nohup``) stays ignored, as
    Python itself leaves it."""
    _requested.clear()
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_sigint)


@contextlib.contextmanager
def sigint_recorded() -> Iterator[None]:
    """``install_handler`` for the duration of one entry-point call, the previous handler back
    afterwards and the request forgotten (a CLI called in-process leaves its caller's handler
    as it found it, and a Ctrl-C it handled does not stop the caller's next run). Outside the
    main thread it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    install_handler()
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _requested.clear()


def interrupted() -> bool:
    return _requested.is_set()


def raise_if_interrupted() -> None:
    """Raise KeyboardInterrupt if Ctrl-C came, even if the first one was lost."""
    if _requested.is_set():
        raise KeyboardInterrupt
