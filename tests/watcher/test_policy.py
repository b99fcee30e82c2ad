"""The watcher's decisions as plain data in, a decision out: no Ray, no storage, no clock."""

from __future__ import annotations

import pytest

from llc_service.errors import IncompleteCheckpoint, TransientFailure
from llc_service.sinks.store import Outcome
from llc_service.watcher import policy


def failed(kind: str, attempt: int = 1, error_type: str | None = "TransientFailure", error: str = "x") -> Outcome:
    return Outcome(status="failed", error=error, error_kind=kind, error_type=error_type, attempt=attempt)


@pytest.mark.parametrize("outcome, max_retries, expected", [
    (None, 2, ("measure", 1)),                                          # never measured
    (Outcome("ok", attempt=2), 2, ("final", 2)),                        # done
    (Outcome("diverged", error_kind="permanent"), 2, ("final", 1)),     # divergence is an outcome, not retried
    (failed("permanent", error_type="CheckpointError"), 5, ("final", 1)),
    (failed("transient", attempt=1), 2, ("measure", 2)),                # retried while attempts remain
    (failed("transient", attempt=2), 2, ("measure", 3)),
    (failed("transient", attempt=3), 2, ("final", 3)),                  # 1 + max_retries attempts spent
    (failed("transient", attempt=1), 0, ("final", 1)),
    # recorded as stuck while pending, now complete
    (failed("permanent", attempt=1, error_type=IncompleteCheckpoint.__name__), 0, ("measure", 1)),
])
def test_on_listing(outcome, max_retries, expected):
    verdict = policy.on_listing(outcome, max_retries)
    assert (verdict.action, verdict.attempt) == expected


def test_stuck_rows_of_older_files_are_recognised_from_their_message():
    """Rows written before ``error_type`` existed carry the class name only at the start of ``error``."""
    old = Outcome.from_row({"status": "failed", "error": "IncompleteCheckpoint: still incomplete after 60s",
                            "error_kind": "permanent", "attempt": 1})
    assert old.error_type == "IncompleteCheckpoint" and policy.is_stuck(old)
    assert not policy.is_stuck(Outcome.from_row({"status": "failed", "error": "no colon here", "attempt": 1}))
    new = Outcome.from_row({"status": "failed", "error": "IncompleteCheckpoint: looks stuck", "error_kind": "permanent",
                            "error_type": "CheckpointError", "attempt": 1})
    assert not policy.is_stuck(new)  # error_type, when present, is what counts


def test_on_result_finishes_recorded_outcomes():
    act = policy.on_result("ok", None, None, recorded=True, attempt=1, max_retries=2, retry_delay=10)
    assert (act.action, act.status, act.record) == ("finish", "ok", False)
    act = policy.on_result("diverged", "permanent", "AllChainsDivergedError: ...", True, 1, 2, 10)
    assert (act.action, act.status, act.record) == ("finish", "diverged", False)


def test_on_result_retries_transient_failures_with_exponential_backoff():
    delays = []
    for attempt in (1, 2, 3):
        act = policy.on_result("failed", "transient", "S3 503 SlowDown", recorded=False, attempt=attempt,
                               max_retries=3, retry_delay=10)
        assert (act.action, act.attempt, act.record) == ("retry", attempt + 1, True)
        delays.append(act.delay)
    assert delays == [10, 20, 40]
    assert policy.backoff(20, 10) == policy.MAX_BACKOFF
    recorded = policy.on_result("failed", "transient", "x", recorded=True, attempt=1, max_retries=1, retry_delay=1)
    assert recorded.action == "retry" and not recorded.record  # the worker wrote its row already


def test_on_result_gives_up_after_the_last_attempt_and_records_why():
    act = policy.on_result("failed", "transient", "worker died", recorded=False, attempt=3, max_retries=2,
                           retry_delay=10)
    assert (act.action, act.status, act.kind, act.record) == ("finish", "failed", "transient", True)
    assert act.error == "worker died (gave up after 3 attempts)"


def test_on_result_treats_unknown_statuses_and_missing_rows_as_permanent():
    act = policy.on_result("weird", "transient", None, recorded=False, attempt=1, max_retries=5, retry_delay=1)
    assert (act.action, act.status, act.kind) == ("finish", "failed", "permanent")
    assert act.error == "no result (status 'weird')"
    unrecorded_ok = policy.on_result("ok", None, None, recorded=False, attempt=1, max_retries=5, retry_delay=1)
    assert (unrecorded_ok.action, unrecorded_ok.status, unrecorded_ok.record) == ("finish", "failed", True)


def test_attempt_after_claim_counts_a_dead_owner_as_an_attempt():
    assert policy.attempt_after_claim(1, 1, previous_attempt=None, took_over=False) == 1
    assert policy.attempt_after_claim(1, 2, previous_attempt=1, took_over=False) == 2
    assert policy.attempt_after_claim(1, 1, previous_attempt=2, took_over=True) == 3
    assert policy.attempt_after_claim(4, 1, previous_attempt=2, took_over=True) == 4


def test_pending_timeout():
    assert not policy.pending_expired(100.0, 150.0, None)
    assert not policy.pending_expired(100.0, 150.0, 60.0)
    assert policy.pending_expired(100.0, 160.0, 60.0)


def test_failure_classes_carry_their_kind():
    from llc_service.errors import classify

    assert classify(TransientFailure("lost worker")) == "transient"
    assert classify(IncompleteCheckpoint("stuck")) == "permanent"
