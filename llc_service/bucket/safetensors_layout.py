"""How big a ``.safetensors`` file must be, read from its header alone.

Format: 8 bytes little-endian header length ``n``, ``n`` bytes of JSON (``{name: {dtype, shape, data_offsets:
[begin, end]}}``), then the data buffer. The file is whole exactly when ``8 + n + max(end) == size``. A file
still being written (local disk, NFS: trainers write in place) is *shorter*; a damaged one is longer or has an
unreadable header. Two small range reads tell which, without downloading the weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable

MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors library refuses larger headers too

OK = "ok"
SHORT = "short"      # fewer bytes than the header promises: still being written, or truncated
CORRUPT = "corrupt"  # unreadable header or more bytes than promised: will never become loadable


@dataclass
class Layout:
    state: str
    detail: str = ""
    expected_size: int | None = None
    tensors: set[str] = field(default_factory=set)


def read_layout(read: Callable[[int, int], bytes], size: int) -> Layout:
    """Check a safetensors file of ``size`` bytes; ``read(start, end)`` returns those bytes of it."""
    if size < 8:
        return Layout(SHORT, f"{size} bytes, not even the 8-byte header length")
    n = int.from_bytes(read(0, 8), "little")
    if n == 0 or n > MAX_HEADER_BYTES:
        return Layout(CORRUPT, f"implausible header length {n}")
    if 8 + n > size:
        return Layout(SHORT, f"{size} bytes, header alone needs {8 + n}")
    try:
        header = json.loads(read(8, 8 + n))
    except (ValueError, UnicodeDecodeError) as e:
        return Layout(CORRUPT, f"unreadable header: {e}")
    if not isinstance(header, dict):
        return Layout(CORRUPT, "header is not a JSON object")
    end = 0
    names: set[str] = set()
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, stop = entry["data_offsets"]
            begin, stop = int(begin), int(stop)
        except (KeyError, TypeError, ValueError):
            return Layout(CORRUPT, f"tensor {name!r} has no valid data_offsets")
        if not 0 <= begin <= stop:
            return Layout(CORRUPT, f"tensor {name!r} has data_offsets {entry['data_offsets']}")
        end = max(end, stop)
        names.add(name)
    expected = 8 + n + end
    if size < expected:
        return Layout(SHORT, f"{size} of {expected} bytes", expected, names)
    if size > expected:
        return Layout(CORRUPT, f"{size} bytes but the header describes {expected}", expected, names)
    return Layout(OK, "", expected, names)


def read_local_layout(path: str) -> Layout:
    """``read_layout`` for a file on local disk."""
    import os

    size = os.path.getsize(path)
    with open(path, "rb") as f:
        def read(start: int, end: int) -> bytes:
            f.seek(start)
            return f.read(end - start)

        return read_layout(read, size)
