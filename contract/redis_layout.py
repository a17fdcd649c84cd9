"""Where a job's data lives in Redis: key names shared by the gateway and the workers.

imagegen:job:<id>            hash: spec, status, owner, timestamps, images, error, progress
imagegen:job:<id>:image:<i>  PNG bytes
imagegen:job:<id>:cancel     set when a client cancels (its own key, so that progress
                             writes never overwrite it)
imagegen:job:<id>:events     pub/sub channel: a message at every status or progress change
imagegen:job:<id>:init       the init image (PNG), if any
imagegen:job:<id>:handoff:<segment>:<i>
                             pictures handed from one worker pool to the next (PNG)
imagegen:outstanding[:<owner>]
                             unfinished jobs, for the queue caps (see `outstanding`)
"""

from __future__ import annotations

PREFIX = "imagegen"


def job_key(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}"


def image_key(job_id: str, index: int) -> str:
    return f"{PREFIX}:job:{job_id}:image:{index}"


def events_channel(job_id: str) -> str:
    """Pub/sub channel told of every status change and progress write (SSE listens to it)."""
    return f"{PREFIX}:job:{job_id}:events"


def init_image_key(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:init"


def handoff_key(job_id: str, segment: int, index: int) -> str:
    """Pictures segment `segment` receives (PNG), written by the worker that ran the one before."""
    return f"{PREFIX}:job:{job_id}:handoff:{segment}:{index}"


def image_url(job_id: str, index: int) -> str:
    return f"/jobs/{job_id}/images/{index}"


def cancel_key(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:cancel"


# Jobs not yet finished, by creation time: all of them, and per owner (`<key>:<owner>`).
OUTSTANDING = f"{PREFIX}:outstanding"


def text(value: bytes | str) -> str:
    """Redis answers bytes (or str, on a decoding client): always text here."""
    return value.decode() if isinstance(value, bytes) else value
