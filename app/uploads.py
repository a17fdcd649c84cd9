"""At most a few large request bodies in flight per key, in each gateway process.

A body is read into memory whole, parsed, and its pictures decoded: 32 concurrent 32 MB bodies
from one key took a gateway to 1.3 GB. The body limit bounds one request; this bounds how many
one key holds at once. Only bodies over `LARGE_BODY_BYTES` count (a spec without pictures is a
few KB), and a key at its limit is told to retry (429 `too_many_uploads`) before its body is read.
A request without a Content-Length (chunked) counts as large: its size is not known. The
middleware that holds the slots is `app.auth_first.UploadsPerKey`. A route that goes on waiting
for its job once admitted (A1111's, OpenAI's) gives its slot back then (`admitted`): a slot
bounds bodies being received and checked, not jobs being made.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextvars import ContextVar

LARGE_BODY_BYTES = 64 * 1024
# The running request's way to give its slot back early (None: it holds none).
_HELD: ContextVar[Callable[[], None] | None] = ContextVar("upload_slot", default=None)


def admitted() -> None:
    """The request's job is admitted: its body is checked and stored, its slot is free."""
    give_back = _HELD.get()
    if give_back is not None:
        give_back()


class TooManyUploads(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(
            f"this key already has {limit} requests with pictures being received and checked; "
            "send the next when one of them is answered (IMAGEGEN_MAX_UPLOADS_PER_KEY)"
        )


class UploadSlots:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: Counter[str] = Counter()
        self._lock = threading.Lock()

    def take(self, owner: str) -> bool:
        with self._lock:
            if self._held[owner] >= self.limit:
                return False
            self._held[owner] += 1
            return True

    def give_back(self, owner: str) -> None:
        with self._lock:
            self._held[owner] -= 1
            if self._held[owner] <= 0:
                del self._held[owner]

    @contextlib.contextmanager
    def held(self, owner: str) -> Iterator[None]:
        """Hold one of `owner`'s slots (taken already) until the request ends, or until its
        route says `admitted`: whichever comes first gives it back, once."""
        given_back = False

        def give_back() -> None:
            nonlocal given_back
            if not given_back:
                given_back = True
                self.give_back(owner)

        token = _HELD.set(give_back)
        try:
            yield
        finally:
            give_back()
            _HELD.reset(token)
