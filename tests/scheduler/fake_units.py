"""Stand-ins for ``measure_checkpoint`` that the Ray tests run as units (importable by Ray workers).

Each writes ``<results_uri>/<name>.json`` under a deterministic name (like the real result files) and appends one
line per attempt to ``<results_uri>/<name>.attempts``, so a test can count how often Ray ran a unit and how many
results it left. They take the same arguments as ``measure_unit``: a ``MeasureUnit`` and the config.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path


def _name(checkpoint) -> str:
    return Path(str(checkpoint)).name


def _attempt(results_uri: str, checkpoint) -> int:
    """Record this attempt; returns its number (1 for the first)."""
    path = Path(results_uri) / f"{_name(checkpoint)}.attempts"
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    return len(path.read_text().splitlines())


def _write_result(results_uri: str, checkpoint, info: dict) -> None:
    final = Path(results_uri) / f"{_name(checkpoint)}.json"
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")  # atomic: temp name, then rename
    tmp.write_text(json.dumps(info))
    os.replace(tmp, final)


def _row(checkpoint, status="ok", **extra) -> dict:
    return {"run_id": "fake", "checkpoint_uri": str(checkpoint), "checkpoint_step": None, "status": status,
            "error": None, "error_kind": None, "llc_mean": 1.0, **extra}


def sleepy_unit(unit, cfg):
    """Sleep (``sleep`` option, 1 s by default), then write where and when it ran (node id, pid, start/end,
    OMP_NUM_THREADS)."""
    import ray

    checkpoint, results_uri, sleep = unit.checkpoint, unit.results_uri, unit.options.get("sleep", 1.0)

    n = _attempt(results_uri, checkpoint)
    start = time.time()
    time.sleep(sleep)
    info = {"node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid(), "start": start,
            "end": time.time(), "attempt": n, "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
    _write_result(results_uri, checkpoint, info)
    return _row(checkpoint, **info)


def dies_once_unit(unit, cfg):
    """Write the result, then kill its own worker process on the first attempt (a worker dying mid-unit)."""
    checkpoint, results_uri = unit.checkpoint, unit.results_uri
    n = _attempt(results_uri, checkpoint)
    _write_result(results_uri, checkpoint, {"attempt": n})
    if n == 1:
        os.kill(os.getpid(), 9)
    return _row(checkpoint, attempt_seen=n)


def always_dies_unit(unit, cfg):
    checkpoint, results_uri = unit.checkpoint, unit.results_uri
    _attempt(results_uri, checkpoint)
    os._exit(1)


def raises_unit(unit, cfg):
    """An application error: must not be retried."""
    checkpoint, results_uri = unit.checkpoint, unit.results_uri
    _attempt(results_uri, checkpoint)
    raise ValueError("bad checkpoint (on purpose)")


def transient_once_unit(unit, cfg):
    """Return a transient failed row on the first attempt (like a storage hiccup caught by the measurement)."""
    checkpoint, results_uri = unit.checkpoint, unit.results_uri
    n = _attempt(results_uri, checkpoint)
    if n == 1:
        return _row(checkpoint, status="failed", error="S3 503 SlowDown (on purpose)", error_kind="transient",
                    llc_mean=None)
    _write_result(results_uri, checkpoint, {"attempt": n})
    return _row(checkpoint, attempt_seen=n)
