"""The watcher's decisions, as plain functions: data in, a decision out. No I/O, no Ray, no clock.

Every rule of "measure each complete checkpoint exactly once, retry what may succeed" lives here, so it can be read
in one place and tested without a cluster:

- :func:`on_listing`: a complete checkpoint and its recorded outcome (if any) → final, or measure (which attempt);
- :func:`on_result`: what a finished unit returned → finish, or retry after a back-off;
- :func:`backoff`: how long to wait before a retry;
- :func:`attempt_after_claim`: the attempt number once we hold the claim (a claim taken over from a watcher that
  died mid-measurement counts as an attempt);
- :func:`pending_expired`: whether a checkpoint has been pending too long.
"""

from __future__ import annotations

from dataclasses import dataclass

from llc_service.errors import PERMANENT, TRANSIENT, IncompleteCheckpoint
from llc_service.sinks.store import Outcome

FINAL_STATUSES = ("ok", "diverged")
"""Statuses that end a checkpoint's story under one config (a failure is final once it is permanent or the
retries are spent)."""
STUCK = IncompleteCheckpoint.__name__
"""``error_type`` of the failed row the watcher writes for a checkpoint stuck while pending."""
MAX_BACKOFF = 600.0
"""Seconds; the longest wait between two attempts."""


@dataclass(frozen=True)
class Verdict:
    """``measure`` (with this attempt number) or ``final`` (the recorded attempt)."""

    action: str
    attempt: int

    @property
    def measure(self) -> bool:
        return self.action == "measure"


def is_stuck(outcome: Outcome | None) -> bool:
    """A failed row recorded for a checkpoint that stayed pending too long: final for now, but the checkpoint is
    measured once it completes."""
    return outcome is not None and outcome.status == "failed" and outcome.error_type == STUCK


def on_listing(outcome: Outcome | None, max_retries: int) -> Verdict:
    """What to do with a *complete* checkpoint given its recorded outcome (None: never recorded)."""
    if outcome is None:
        return Verdict("measure", 1)
    if outcome.status in FINAL_STATUSES:
        return Verdict("final", outcome.attempt)
    if is_stuck(outcome):
        return Verdict("measure", 1)  # recorded as stuck while pending; now it is complete
    if outcome.status == "failed" and outcome.error_kind == TRANSIENT and outcome.attempt < 1 + max_retries:
        return Verdict("measure", outcome.attempt + 1)
    return Verdict("final", outcome.attempt)


@dataclass(frozen=True)
class Action:
    """What to do with a finished unit.

    ``retry``: record a transient failure if the worker did not (``record``), back off ``delay`` seconds, then run
    attempt ``attempt``. ``finish``: the checkpoint is done with ``status``; when the worker left no row
    (``record``), write a failed row of ``kind`` with ``error``.
    """

    action: str
    status: str
    kind: str | None
    error: str | None
    record: bool
    attempt: int
    delay: float = 0.0


def on_result(status: str | None, kind: str | None, error: str | None, recorded: bool, attempt: int,
              max_retries: int, retry_delay: float) -> Action:
    """Decide what a finished unit means: ``status``/``kind``/``error`` as the unit returned them, ``recorded``
    whether its row reached Parquet, ``attempt`` the attempt that ran."""
    if status in FINAL_STATUSES and recorded:
        return Action("finish", status, kind, error, record=False, attempt=attempt)
    error = str(error or f"no result (status {status!r})")
    if status not in ("failed",) + FINAL_STATUSES:
        kind = PERMANENT
    if kind == TRANSIENT and attempt < 1 + max_retries:
        return Action("retry", "failed", kind, error, record=not recorded, attempt=attempt + 1,
                      delay=backoff(attempt, retry_delay))
    if not recorded and kind == TRANSIENT:
        error = f"{error} (gave up after {attempt} attempts)"
    return Action("finish", "diverged" if status == "diverged" else "failed", kind, error, record=not recorded,
                  attempt=attempt)


def backoff(attempt: int, retry_delay: float) -> float:
    """Seconds to wait after failed attempt ``attempt``: ``retry_delay`` · 2^(attempt-1), at most MAX_BACKOFF."""
    return min(MAX_BACKOFF, retry_delay * 2 ** (attempt - 1))


def attempt_after_claim(queued: int, recorded: int, previous_attempt: int | None, took_over: bool) -> int:
    """The attempt to run once the claim is ours: the larger of what the listing and the latest row say, and one
    more than the previous claim's when we took over a claim whose owner never released it (it died or hung
    while measuring: that was an attempt too)."""
    attempt = max(queued, recorded)
    if took_over and previous_attempt is not None:
        attempt = max(attempt, previous_attempt + 1)
    return attempt


def pending_expired(first_seen: float, now: float, timeout: float | None) -> bool:
    """A checkpoint pending with unchanged files since ``first_seen`` has waited long enough (None: forever)."""
    return timeout is not None and now - first_seen >= timeout
