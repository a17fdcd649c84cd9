"""The finisher thread: jobs end in order after their call returned, and a stop waits for it."""

from __future__ import annotations

import threading
import time

from workers.segments.finisher import Finisher


def test_finishes_in_order_and_drain_waits_for_all() -> None:
    finisher = Finisher()
    done: list[int] = []
    gate = threading.Event()
    finisher.submit(lambda: (gate.wait(5), done.append(1)))
    finisher.submit(lambda: 1 / 0)  # a bug in one does not stop the next
    finisher.submit(lambda: done.append(3))
    assert done == []  # submitting never waits for the work
    threading.Timer(0.2, gate.set).start()
    started = time.monotonic()
    finisher.drain()
    assert done == [1, 3]
    assert time.monotonic() - started >= 0.15
