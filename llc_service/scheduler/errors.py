"""The one exception class Ray is allowed to retry.

Ray retries a task after its worker process or node dies (``max_retries``), but an exception raised by the task is
final unless its class is listed in ``retry_exceptions``. Retrying every exception would re-run bad checkpoints and
bad configs ``max_retries`` times for nothing, so only :class:`TransientError` (storage hiccups, throttling, a
flaky network) is listed. A measurement that catches its own errors and returns a failed row with
``error_kind == "transient"`` is turned into this exception by the scheduler so that Ray retries it too.
"""

from __future__ import annotations


class TransientError(Exception):
    """A failure that may go away on a retry. ``row`` carries the failed summary row, if there was one.

    Retries share Ray's ``max_retries`` budget with worker deaths; after the last attempt the scheduler reports
    ``row`` (or a row built from the message) as the unit's failed result.
    """

    def __init__(self, message: str, row: dict | None = None):
        super().__init__(message)
        self.row = row

    def __reduce__(self):  # keep ``row`` when Ray pickles the exception back to the driver
        return (type(self), (str(self), self.row))
