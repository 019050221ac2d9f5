import threading
import time

from seal_ray.background import repeating


def test_a_repeating_task_ticks_while_the_block_runs_and_never_after_it():
    ticks = []
    with repeating(0.01, lambda: ticks.append(time.monotonic()), name="test"):
        time.sleep(0.2)
    count = len(ticks)
    time.sleep(0.05)
    assert count >= 3 and len(ticks) == count
    assert not any(t.name == "test" for t in threading.enumerate())


def test_a_tick_returning_false_ends_the_repetition():
    ticks = []

    def tick() -> bool:
        ticks.append(1)
        return len(ticks) < 2

    with repeating(0.01, tick, name="test"):
        time.sleep(0.2)
    assert len(ticks) == 2


def test_immediately_ticks_at_once_and_a_join_timeout_does_not_wait_for_a_stuck_tick():
    ticks, release = [], threading.Event()

    def tick() -> None:
        ticks.append(time.monotonic())
        release.wait(5.0)  # stuck, as a storage probe waiting on a node that went away

    start = time.monotonic()
    with repeating(60.0, tick, name="stuck", immediately=True, join_timeout_s=0.1):
        time.sleep(0.05)
    left = time.monotonic() - start
    release.set()
    assert len(ticks) == 1 and ticks[0] - start < 0.05  # not after the 60 s interval
    assert left < 1.0  # the block was left without waiting out the stuck tick
