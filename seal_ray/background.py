"""A task repeated in a background thread while a block runs (lease refreshes, tracking uploads, log
tails, the storage watch)."""

from __future__ import annotations

import contextlib
import threading
from typing import Callable, Iterator


@contextlib.contextmanager
def repeating(interval_s: float, tick: Callable[[], bool | None], name: str, *, immediately: bool = False,
              join_timeout_s: float | None = None) -> Iterator[None]:
    """Call `tick` every `interval_s` seconds in a daemon thread while the block runs (the first call at
    once with `immediately`); a tick that returns False ends the repetition. On leaving the block the
    thread is stopped and joined, so no tick runs after it (one in progress finishes first), or, with
    `join_timeout_s`, waited for that long only (a tick stuck on something that no longer matters)."""
    stop = threading.Event()

    def loop() -> None:
        if immediately and tick() is False:
            return
        while not stop.wait(interval_s):
            if tick() is False:
                return

    thread = threading.Thread(target=loop, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(join_timeout_s)
