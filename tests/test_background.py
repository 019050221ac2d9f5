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
