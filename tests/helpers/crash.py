"""A unit function that dies with its Ray worker on a poisoned checkpoint, every time (imported by Ray workers).

Stands in for a checkpoint that makes the measuring process crash (the OOM killer, a segfault in a kernel): a
checkpoint folder holding a file named ``CRASH`` kills the worker with SIGKILL as soon as its measurement starts.
Every other checkpoint is measured for real by the watcher's own unit function.
"""

from __future__ import annotations

import os
import signal


def crash_on_poison(unit, cfg):
    from llc_service.watcher.watch import measure_recorded

    if os.path.exists(os.path.join(unit.checkpoint_uri, "CRASH")):
        os.kill(os.getpid(), signal.SIGKILL)
    return measure_recorded(unit, cfg)
