"""Reading A1111's `parameters` text back, as its `parse_generation_parameters` does, for
`POST /sdapi/v1/png-info`.

The text is the prompt, a `Negative prompt:` line, and one line of `Key: value` pairs (a value
with a comma, colon or newline JSON-quoted; `workers/segments/png.py` writes it so). `Size` and
`Hires resize` are split into `-1`/`-2` as A1111 splits them. Values stay text, as A1111 leaves
the ones it has no default for.
"""

from __future__ import annotations

import contextlib
import json
import re

# A1111's own pattern for one pair of the settings line, its key bounded: unbounded, it
# backtracks over the whole line from every position (a 20,000-character line took 1.6 s; a
# PNG chunk may hold a megabyte). A1111's keys are a few words.
_PAIR = re.compile(r'\s*(\w[\w \-/]{0,63}):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
# A1111's texts are a few hundred characters; past this nothing is read.
MAX_CHARS = 65_536
_SPLIT = ("Size", "Hires resize")


def parse_parameters(text: str) -> dict[str, str]:
    """The fields of an A1111 `parameters` text, by A1111's names (`Prompt`, `Negative prompt`,
    `Steps`, `Size-1`, …)."""
    lines = text[:MAX_CHARS].strip().split("\n")
    settings = lines.pop() if lines and len(_PAIR.findall(lines[-1])) >= 3 else ""
    prompt: list[str] = []
    negative: list[str] = []
    in_negative = False
    for line in lines:
        if line.startswith("Negative prompt:"):
            in_negative, line = True, line.removeprefix("Negative prompt:").strip()
        (negative if in_negative else prompt).append(line)
    fields = {"Prompt": "\n".join(prompt), "Negative prompt": "\n".join(negative)}
    for key, value in _PAIR.findall(settings):
        value = value.strip()
        if value.startswith('"') and value.endswith('"'):
            with contextlib.suppress(ValueError):  # not JSON after all: as written
                value = str(json.loads(value))
        if key in _SPLIT and "x" in value:
            fields[f"{key}-1"], _, fields[f"{key}-2"] = value.partition("x")
        else:
            fields[key] = value
    return fields
