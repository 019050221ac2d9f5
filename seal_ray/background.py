"""A task repeated in a background thread while a block runs (lease refreshes, tracking uploads)."""

from __future__ import annotations

import contextlib
import threading
from typing import Callable, Iterator


@contextlib.contextmanager
def repeating(interval_s: float, tick: Callable[[], bool | None], name: str) -> Iterator[None]:
    """Call `tick` every `interval_s` seconds in a daemon thread while the block runs; a tick that
    returns False ends the repetition. On leaving the block the thread is stopped and joined, so no
    tick runs after it (one in progress finishes first)."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval_s):
            if tick() is False:
                return

    thread = threading.Thread(target=loop, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
