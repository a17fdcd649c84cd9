"""What a client may read about the hosts behind the service: neither paths nor pids.

A failure's words and `GET /models` are read by every key holder. The host's folder layout (where
a checkpoint lives) and a worker's host name and pid tell an outsider how the machines are laid
out and when a process restarts; the operator finds both in the worker's log, which names the
job, the worker's full name and the file.
"""

from __future__ import annotations

import re

_SEGMENT = r"[^\s/\\'\"(),;]"
# An absolute path (POSIX, or Windows with a drive letter); group 1 is its last segment, less a
# sentence's closing period.
_ABSOLUTE_PATH = re.compile(
    rf"(?<![\w:/.\\])(?:/(?:{_SEGMENT}+/)+|[A-Za-z]:\\(?:{_SEGMENT}+\\)*)({_SEGMENT}*[^\s/\\'\"(),;.])"
)


def without_host_paths(text: str) -> str:
    """`text` with each absolute path cut to its last segment (`…/unet`): enough to say which
    file, nothing about where the host keeps it."""
    return _ABSOLUTE_PATH.sub(r"…/\1", text)


def public_worker_name(name: str) -> str:
    """A worker as any key holder sees it: `worker-<its random suffix>`. Full names are
    `<name or host>.<pid>.<suffix>` (`jobs.heartbeat_worker.unique_name`); admin keys and the
    logs see those, and the suffix ties the two together."""
    return f"worker-{name.rsplit('.', 1)[-1]}"
