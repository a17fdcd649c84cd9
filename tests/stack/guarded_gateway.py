"""Runs the gateway under uvicorn with `workers`, torch, diffusers and transformers unimportable.

    python tests/stack/guarded_gateway.py REPORT uvicorn-args...

Any attempt to import them raises ImportError (so a code path that needs them fails, as it would
in the API image, which holds no `workers/` and no torch) and is written to REPORT with its stack;
when stopped (SIGTERM) the process writes which of them are in `sys.modules`.
"""

from __future__ import annotations

import json
import signal
import sys
import traceback
from collections.abc import Sequence
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec
from types import ModuleType

BLOCKED = ("workers", "torch", "diffusers", "transformers")
REPORT = sys.argv[1]


def _write(record: dict[str, object]) -> None:
    with open(REPORT, "a") as report:
        report.write(json.dumps(record) + "\n")


class _Guard(MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname.split(".")[0] in BLOCKED:
            _write({"import": fullname, "stack": traceback.format_stack()})
            raise ImportError(f"{fullname} may not be imported by the gateway")
        return None


def _report_loaded(*_: object) -> None:
    _write({"loaded": sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)})
    sys.exit(0)


sys.meta_path.insert(0, _Guard())
# uvicorn restores the SIGTERM handler it found once it has shut down, then raises the signal
# again: this handler reports what was loaded and exits.
signal.signal(signal.SIGTERM, _report_loaded)

import uvicorn  # noqa: E402 - after the guard, on purpose

sys.argv = ["uvicorn", *sys.argv[2:]]
uvicorn.main()
