"""Finishing a job (PNG encoding, the upload to Redis, the final status) off the critical path.

Encoding a 1024² PNG takes about 130 ms and the upload a few more; done in the job's own RQ call,
the GPU idles meanwhile. Here the job's call returns once its pictures exist, the worker takes
its next job, and one thread encodes, stores and ends the previous one as the next denoises.

The job stays `running` until its pictures are stored, and its claim (`jobs.claims`) is held
until then. If the worker dies before, its RQ job is already finished, so RQ would not run it
again: the janitor does (`jobs.janitor`: a `running` job whose RQ job finished and whose claim
expired is queued again). A stopping worker finishes what is pending before it exits.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger("imagegen.worker")

# Jobs whose pictures may wait for the thread: a batch's members at most, and a bound on memory.
PENDING = 16


class Finisher:
    def __init__(self) -> None:
        self._work: queue.Queue[Callable[[], None]] = queue.Queue(maxsize=PENDING)
        self._thread = threading.Thread(target=self._run, daemon=True, name="finisher")
        self._thread.start()

    def submit(self, finish: Callable[[], None]) -> None:
        """Run `finish` on the thread, after those submitted before (waits while full)."""
        self._work.put(finish)

    def drain(self) -> None:
        """Wait until everything submitted is done."""
        self._work.join()

    def _run(self) -> None:
        while True:
            finish = self._work.get()
            try:
                finish()
            except Exception:  # `finish` files its own failures; this is a bug's last resort
                log.exception("finishing a job failed")
            finally:
                self._work.task_done()
