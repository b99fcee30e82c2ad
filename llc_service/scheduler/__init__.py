"""Ray layer: one task per checkpoint (``ray_runner``: ``run_measurements`` blocking, ``Dispatcher`` non-blocking),
job submission (``submit``). The retryable error is :class:`llc_service.errors.TransientError`.

Nothing heavy is imported here; ``ray`` is imported inside the functions that need it.
"""

from llc_service.errors import TransientError

__all__ = ["Dispatcher", "TransientError", "connect", "run_measurements", "submit_job"]


def __getattr__(name):
    if name in ("Dispatcher", "connect", "run_measurements"):
        from llc_service.scheduler import ray_runner

        return getattr(ray_runner, name)
    if name == "submit_job":
        from llc_service.scheduler.submit import submit_job

        return submit_job
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
