"""What a registered name may look like: models, LoRAs and upscaler models alike (A1111 names
LoRAs by file name, so the pattern admits dots and dashes)."""

from __future__ import annotations

import re

MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
MODEL_NAME = re.compile(MODEL_NAME_PATTERN)
