"""A lease on object storage: a lock object that only one of any number of racers can take.

Taking it is `create_if_absent` (on S3 a PUT with `If-None-Match: *`): exactly one racer creates the
object, the others wait for it to go. The holder refreshes it every LEASE_S / 4 with `replace_if` on
the version it wrote (`If-Match: <ETag>`), so a lease goes stale only when its holder stopped running
(killed, machine lost); a waiter takes a lease not refreshed for LEASE_S over with `replace_if` on the
stale version, which again exactly one waiter wins. The holder deletes it when done, only if it is
still its own (`delete_if`).

Where the store cannot enforce those conditions (`Storage.exclusive_writes` is False: gs:// through
pyarrow, or boto3 not installed) the same protocol writes, then reads back to confirm: best effort,
two racers within one round trip can both believe they hold it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from typing import Callable, Iterator

from seal_ray.background import repeating
from seal_ray.storage import Storage

LEASE_S = 600.0  # a lease its holder has not refreshed for this long is taken over
POLL_S = 2.0  # how often a waiter looks at the lease again
_warned_best_effort: set[str] = set()


def _is_stale(text: str) -> bool:
    try:
        return time.time() - float(json.loads(text)["time"]) > LEASE_S
    except (ValueError, KeyError, TypeError):
        return True  # not a lease this code wrote (or cut short): nobody can be refreshing it


@contextlib.contextmanager
def lease(storage: Storage, rel: str, on_wait: Callable[[], None] = lambda: None,
          log: Callable[[str], None] = print) -> Iterator[None]:
    """Hold the lease object `rel` of `storage`; `on_wait` is called once if another holder has it."""
    if not storage.exclusive_writes and storage.uri not in _warned_best_effort:
        _warned_best_effort.add(storage.uri)
        log(f"storage {storage.uri} cannot refuse a second writer of an object (S3 can, through boto3): its "
            "leases are best effort, and two machines may compute the same stage twice (each copy whole)")
    owner = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def payload() -> str:
        return json.dumps({"owner": owner, "time": time.time()})

    version = _take(storage, rel, payload, on_wait, log)
    lost = threading.Event()

    def refresh() -> bool:
        nonlocal version
        try:
            renewed = storage.replace_if(rel, payload(), version)
        except Exception:  # noqa: BLE001 - a network hiccup: the next tick tries again, the work goes on
            return True
        if renewed is None:  # taken over: this process was not refreshing it for LEASE_S
            lost.set()
            return False
        version = renewed
        return True

    try:
        with repeating(LEASE_S / 4, refresh, name=f"lease {rel}"):
            yield
    finally:
        if lost.is_set():
            log(f"the lease {rel} was taken over while held (not refreshed for {LEASE_S:.0f} s); "
                "its work may have been done twice, each copy whole")
        else:
            try:
                storage.delete_if(rel, version)
            except Exception as err:  # noqa: BLE001 - the work is done: a lease left behind only goes stale
                log(f"could not delete the lease {rel} ({err}); others take it over after {LEASE_S:.0f} s")


def _take(storage: Storage, rel: str, payload: Callable[[], str], on_wait: Callable[[], None],
          log: Callable[[str], None]) -> str:
    """Wait until this process holds the lease; returns the version it wrote."""
    waited = False
    while True:
        version = storage.create_if_absent(rel, payload())
        if version is not None:
            return version
        current = storage.read_versioned(rel)
        if current is None:
            continue  # released between the two calls: race for it again at once
        text, held_version = current
        if _is_stale(text):
            version = storage.replace_if(rel, payload(), held_version)
            if version is not None:
                log(f"took over the stale lease {rel} ({text[:120]})")
                return version
            continue  # another waiter took it over first, or its holder refreshed it
        if not waited:
            on_wait()
            waited = True
        time.sleep(POLL_S)
