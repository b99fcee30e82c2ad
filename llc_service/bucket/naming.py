"""Training step and run id from a checkpoint folder's name, the way common trainers name them.

HF ``Trainer`` writes ``checkpoint-<N>``, Pythia-style suites ``step<N>``, DeepSpeed ``global_step<N>``; anything
else ending in an integer is read as that integer. Only when the name says nothing do we read
``trainer_state.json`` (one more request per folder).
"""

from __future__ import annotations

import json
import posixpath
import re

_PATTERNS = (
    re.compile(r"^step[-_]?(\d+)$", re.IGNORECASE),
    re.compile(r"^checkpoint[-_](\d+)$", re.IGNORECASE),
    re.compile(r"^global[-_]?step[-_]?(\d+)$", re.IGNORECASE),
    re.compile(r"(\d+)$"),
)


def step_from_name(name: str) -> int | None:
    """``step100`` / ``checkpoint-100`` / ``global_step100`` / ``anything-100`` -> 100, else None."""
    for pattern in _PATTERNS:
        m = pattern.search(name)
        if m:
            return int(m.group(1))
    return None


def step_from_trainer_state(text: str | bytes) -> int | None:
    """``global_step`` of an HF ``trainer_state.json``; None if missing or unreadable (it may be half-written)."""
    try:
        value = json.loads(text).get("global_step")
    except (ValueError, AttributeError):
        return None
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def default_run_id(folder_path: str) -> str:
    """Name of the checkpoint folder's parent (``runs/pythia-70m/step100`` -> ``pythia-70m``)."""
    parent = posixpath.basename(posixpath.dirname(folder_path.rstrip("/")))
    return parent or "default"
