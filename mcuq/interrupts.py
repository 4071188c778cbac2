"""Ctrl-C and SIGTERM held over the few steps that must not be cut in half: swapping an output
directory into place and cleaning up after it, spawning an emulator and recording it."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT / SIGTERM until the block ends, then deliver the first one (as its handler
    would have: KeyboardInterrupt under Python's and the CLI's handlers). Main thread only:
    elsewhere signals are not delivered to Python code anyway."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = {sig: signal.signal(sig, lambda num, _frame: pending.append(num))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if pending:
            signal.raise_signal(pending[0])
