"""One watcher's state and the I/O that carries out :mod:`llc_service.watcher.policy`'s decisions.

Each method is one step of the loop in :mod:`llc_service.watcher.watch`: **poll** (list the source, read the
recorded outcomes, queue what the policy says to measure, record checkpoints stuck while pending), **dispatch**
(claim in RESULTS, submit one Ray task per checkpoint), **collect** (what finished: finish, record, or schedule a
retry), **renew** (the leases of held claims), **stop** (cancel and release). Identity everywhere is the
:class:`~llc_service.sinks.store.ResultKey` of (run, config, checkpoint step or folder, fingerprint).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

from llc_service.bucket.ref import CheckpointRef
from llc_service.config import MeasureConfig, WatchConfig
from llc_service.errors import TRANSIENT, IncompleteCheckpoint, PermanentFailure, TransientFailure, is_refusal
from llc_service.sinks.base import summary_line
from llc_service.sinks.store import Outcome, ResultKey, ResultsStore
from llc_service.watcher import policy
from llc_service.watcher.claims import Claim, ClaimLost, ClaimStore
from llc_service.worker.unit import MeasureUnit

log = logging.getLogger(__name__)


@dataclass
class Job:
    """A checkpoint this watcher holds a claim on: in flight, or waiting out a back-off before the next attempt."""

    key: ResultKey
    ref: CheckpointRef
    claim: Claim
    attempt: int
    in_flight: bool = False
    retry_at: float | None = None
    started: float = field(default_factory=time.monotonic)


def _order(ref: CheckpointRef) -> tuple:
    return (ref.run_id, ref.step is None, ref.step or 0, ref.uri)


class Watcher:
    """State of one watcher. Not thread-safe: one loop drives it."""

    def __init__(self, source: str, data_uri: str, results_uri: str, cfg: MeasureConfig, settings: WatchConfig, *,
                 make_dispatcher: Callable, claims: ClaimStore):
        from llc_service.bucket import get_source

        self.source_uri, self.data_uri, self.results_uri, self.cfg = str(source), str(data_uri), str(results_uri), cfg
        self.settings, self.run_id, self.once = settings, settings.run_id, settings.once
        self.config_hash = cfg.config_hash()
        self.source = get_source(self.source_uri, storage_options=cfg.storage_options, marker_file=cfg.marker_file)
        self.results = ResultsStore(self.results_uri, cfg.storage_options)
        self._make_dispatcher, self._dispatcher, self.store = make_dispatcher, None, claims
        self.jobs: dict[ResultKey, Job] = {}
        self.queue: dict[ResultKey, tuple[CheckpointRef, int]] = {}  # candidates not claimed yet -> (ref, attempt)
        self.final: dict[ResultKey, str] = {}  # key -> status of its final outcome (recorded, or seen in RESULTS)
        self.unrecorded: set[ResultKey] = set()  # final outcome that could not be written (results store down)
        self.targets: dict[ResultKey, CheckpointRef] | None = None  # once: the complete checkpoints of the 1st list
        self.pending: dict[tuple[str, str], tuple[float, str]] = {}  # (uri, fp) -> (first seen, reason)
        self.pending_now: list[CheckpointRef] = []
        self.held_elsewhere: dict[ResultKey, str] = {}
        self.unreleased: dict[ResultKey, Claim] = {}  # releases that failed (storage trouble): tried again
        self.maybe_held: set[ResultKey] = set()  # a claim attempt failed midway: our claim may stand (checked at stop)
        self.counts = {"ok": 0, "diverged": 0, "failed": 0, "retried": 0}
        self.dirty: set[tuple[str, str]] = set()  # (run, config) with new outcomes since the last on_outcomes
        self.storage_trouble_until = 0.0
        self.last_picture: tuple | None = None
        self.refused: str | None = None  # why a store refuses us for good: the loop stops (exit 1)
        self.data_fp: str | None = None  # DATA's fingerprint, part of every key; taken at the first listing

    def dispatcher(self):
        """Ray is joined (or started) at the first dispatch: a watcher with nothing to measure never needs it."""
        if self._dispatcher is None:
            self._dispatcher = self._make_dispatcher()
        return self._dispatcher

    def key(self, ref: CheckpointRef) -> ResultKey:
        return ResultKey.of(self.run_id or ref.run_id, self.config_hash, ref.fingerprint, ref.step, ref.uri,
                            self.data_fp)

    def label(self, ref: CheckpointRef) -> str:
        run = self.run_id or ref.run_id
        return f"{run} step {ref.step}" if ref.step is not None else f"{run} {ref.uri}"

    def unit(self, ref: CheckpointRef, attempt: int, final: bool = True) -> MeasureUnit:
        return MeasureUnit(ref, self.data_uri, self.results_uri, run_id=self.run_id, attempt=attempt,
                           use_wandb=self.settings.use_wandb and final, data_fingerprint=self.data_fp)

    def recorded(self, refs: list[CheckpointRef]) -> dict[ResultKey, Outcome]:
        """The recorded outcome of each of ``refs`` that has one (raises on storage errors)."""
        return self.results.outcomes(self.key(r) for r in refs)

    def _refusal(self, what: str, uri: str, exc: BaseException) -> bool:
        """Note a store that refuses us for good (no permission, deleted bucket); True if ``exc`` is one."""
        if not is_refusal(exc):
            return False
        if self.refused is None:
            self.refused = (f"{what} {uri} refuses access ({type(exc).__name__}: {exc}); fix its "
                            f"permissions or bucket, then restart the watcher (what is already recorded stays)")
        return True

    def finish_after_this_listing(self) -> None:
        """Switch to ``once``: the next listing is the final one (and is logged)."""
        self.once, self.targets, self.last_picture = True, None, None

    # ---- polling --------------------------------------------------------------------------------------------------

    def poll(self) -> bool:
        """List the source (in once mode only the first time) and queue candidates. False if storage failed."""
        now = time.monotonic()
        if self.data_fp is None and not self._identify_data():
            return False
        if self.once and self.targets is not None:
            refs = [r for k, r in self.targets.items() if k not in self.final and k not in self.jobs]
            pending: list[CheckpointRef] = []
        else:
            try:
                listed = self.source.list_checkpoints()
            except Exception as exc:  # noqa: BLE001 - a storage hiccup: try again next poll
                if self._refusal("the source", self.source_uri, exc):
                    return False
                log.warning("listing %s failed (%s: %s); trying again in %gs", self.source_uri,
                            type(exc).__name__, exc, self.settings.interval)
                return False
            refs = [r for r in listed if r.is_complete]
            pending = [r for r in listed if not r.is_complete]
            self.pending_now = pending
        # a checkpoint recorded as stuck while pending is looked at again: it may have completed since
        fresh = [r for r in refs if self.final.get(self.key(r), policy.STUCK) == policy.STUCK
                 and self.key(r) not in self.jobs]
        try:
            outcomes = self.recorded(fresh)
        except Exception as exc:  # noqa: BLE001
            if self._refusal("the results store", self.results_uri, exc):
                return False
            log.warning("reading results under %s failed (%s: %s); trying again in %gs", self.results_uri,
                        type(exc).__name__, exc, self.settings.interval)
            return False
        if self.once and self.targets is None:
            self.targets = {self.key(r): r for r in refs}
        new, retry, already = [], [], 0
        for ref in fresh:
            key = self.key(ref)
            verdict = policy.on_listing(outcomes.get(key), self.cfg.max_retries)
            if not verdict.measure:
                self.final[key] = outcomes[key].status
                already += 1
                continue
            (retry if verdict.attempt > 1 else new).append(ref)
            self.queue[key] = (ref, verdict.attempt)
        self._track_pending(pending, now)
        if self.once and self.last_picture is not None:
            return True  # once re-checks its first list only; nothing new to report
        picture = (len(refs), len(self.final), len(new), len(retry), tuple((r.uri, r.reason) for r in pending))
        if picture != self.last_picture:
            log.info("%s: %d complete checkpoint(s) (%d new, %d to retry, %d already measured), %d pending",
                     self.source_uri, len(refs), len(new), len(retry), already, len(pending))
            for ref in new:
                log.info("found %s (%s)", self.label(ref), ref.uri)
            self.last_picture = picture
        return True

    def _identify_data(self) -> bool:
        """Take DATA's fingerprint (once per watcher: restart it after changing DATA in place)."""
        from llc_service.data import data_fingerprint

        try:
            self.data_fp = data_fingerprint(self.data_uri, self.cfg)
        except Exception as exc:  # noqa: BLE001 - a storage hiccup: try again next poll
            if not self._refusal("the data", self.data_uri, exc):
                log.warning("listing data %s failed (%s: %s); trying again in %gs", self.data_uri,
                            type(exc).__name__, exc, self.settings.interval)
            return False
        log.info("data %s: fingerprint %s", self.data_uri, self.data_fp)
        return True

    def _track_pending(self, pending: list[CheckpointRef], now: float) -> None:
        seen = set()
        for ref in pending:
            pk = (ref.uri, ref.fingerprint)
            seen.add(pk)
            first, reason = self.pending.get(pk, (now, None))
            if reason != ref.reason:
                log.info("pending: %s (%s)", self.label(ref), ref.reason)
            self.pending[pk] = (first, ref.reason)
            if policy.pending_expired(first, now, self.settings.pending_timeout):
                self._record_stuck(ref, now - first)
        for pk in set(self.pending) - seen:  # completed, rewritten or removed
            del self.pending[pk]

    def _record_stuck(self, ref: CheckpointRef, age: float) -> None:
        """A checkpoint pending too long with the same files gets a failed row (it may still complete later)."""
        key = self.key(ref)
        if key in self.final or key in self.jobs:
            return
        try:
            if self.recorded([ref]).get(key) is not None:
                self.final[key] = policy.STUCK
                return
            claim = self.store.try_claim(key)
            if claim is None:
                return
            try:
                self._write_failure(ref, IncompleteCheckpoint(
                    f"still incomplete after {age:.0f}s with unchanged files: {ref.reason} (measured once it "
                    f"completes)"), attempt=1, final=True)
            finally:
                self._release(claim)
        except Exception as exc:  # noqa: BLE001
            log.warning("recording stuck checkpoint %s failed (%s)", ref.uri, exc)
            return
        self.final[key] = policy.STUCK
        self.counts["failed"] += 1
        self.dirty.add((key.run_id, key.config_hash))
        log.info("%s: failed [permanent] incomplete for %.0fs: %s", self.label(ref), age, ref.reason)

    # ---- dispatching ----------------------------------------------------------------------------------------------

    def in_flight(self) -> int:
        return sum(1 for j in self.jobs.values() if j.in_flight)

    def dispatch(self) -> None:
        now = time.monotonic()
        for job in list(self.jobs.values()):  # retries whose back-off is over (we still hold their claim)
            if not job.in_flight and job.retry_at is not None and job.retry_at <= now and self._room():
                self._submit(job)
        if now < self.storage_trouble_until or not self.queue or not self._room():
            return
        self.dispatcher()  # join Ray before claiming: its start-up must not eat into a lease
        for key in sorted(self.queue, key=lambda k: _order(self.queue[k][0])):
            if not self._room():
                break
            ref, attempt = self.queue.pop(key)
            try:
                self._claim_and_submit(key, ref, attempt)
            except Exception as exc:  # noqa: BLE001 - claims live in RESULTS: storage trouble, try again soon
                if self._refusal("the results store", self.results_uri, exc):
                    self.queue[key] = (ref, attempt)
                    return
                log.warning("claiming %s failed (%s: %s); trying again shortly", ref.uri, type(exc).__name__, exc)
                self.queue[key] = (ref, attempt)
                self.maybe_held.add(key)
                self.storage_trouble_until = now + min(5.0, self.settings.interval)
                return

    def _room(self) -> bool:
        cap = self.settings.max_concurrent
        return not cap or self.in_flight() < cap

    def _claim_and_submit(self, key: ResultKey, ref: CheckpointRef, attempt: int) -> None:
        self.unreleased.pop(key, None)  # a claim of ours whose release failed is picked up below, not released
        previous = self.store.read(key)
        if previous is not None and previous.owner == self.store.owner and previous.is_live():
            # ours, from a claim whose write went through but whose confirmation failed (storage trouble)
            claim = previous
        else:
            claim = self.store.try_claim(key)
        self.maybe_held.discard(key)
        if claim is None:
            holder = previous.owner if previous is not None else "another watcher"
            if self.held_elsewhere.get(key) != holder:
                log.info("%s is being measured by %s; leaving it to them", self.label(ref), holder)
            self.held_elsewhere[key] = holder
            return
        self.held_elsewhere.pop(key, None)
        # someone may have recorded it between our listing and our claim
        outcome = self.recorded([ref]).get(key)
        verdict = policy.on_listing(outcome, self.cfg.max_retries)
        if not verdict.measure:
            self.final[key] = outcome.status
            self._release(claim)
            return
        took_over = previous is not None and previous.released_at is None and previous.owner != self.store.owner
        if took_over:  # its owner died or hung while measuring
            log.info("%s: took over the expired claim of %s (attempt %d)", self.label(ref), previous.owner,
                     previous.attempt)
        attempt = policy.attempt_after_claim(attempt, verdict.attempt, previous.attempt if previous else None,
                                             took_over)
        job = Job(key=key, ref=ref, claim=claim, attempt=attempt)
        self.jobs[key] = job
        self._submit(job)

    def _submit(self, job: Job) -> None:
        self.dispatcher().submit(self.unit(job.ref, job.attempt), token=job.key)
        job.in_flight, job.retry_at, job.started = True, None, time.monotonic()
        log.info("claimed and dispatched %s%s", self.label(job.ref),
                 f" (attempt {job.attempt})" if job.attempt > 1 else "")

    # ---- outcomes -------------------------------------------------------------------------------------------------

    def collect(self, timeout: float) -> int:
        """Handle finished units (waiting at most ``timeout`` for the first); returns how many finished."""
        finished = self.dispatcher().poll(timeout=timeout)
        for key, _unit, row, seconds in finished:
            job = self.jobs.get(key)
            if job is None:  # cancelled after a lost claim, finished anyway
                continue
            job.in_flight = False
            self._outcome(job, row, seconds)
        return len(finished)

    def _outcome(self, job: Job, row: dict, seconds: float) -> None:
        label = self.label(job.ref)
        act = policy.on_result(row.get("status"), row.get("error_kind"), row.get("error"),
                               bool(row.get("recorded")), job.attempt, self.cfg.max_retries,
                               self.settings.retry_delay)
        if act.action == "retry":
            if act.record:
                self._try_write_failure(job.ref, TransientFailure(act.error), job.attempt, final=False)
            log.warning("%s: attempt %d of %d failed [transient] %s; retrying in %.1fs", label, job.attempt,
                        1 + self.cfg.max_retries, act.error.splitlines()[0][:300] if act.error else "", act.delay)
            self.counts["retried"] += 1
            job.attempt, job.retry_at = act.attempt, time.monotonic() + act.delay
            return
        if act.record:
            exc = TransientFailure(act.error) if act.kind == TRANSIENT else PermanentFailure(act.error)
            if not self._try_write_failure(job.ref, exc, job.attempt, final=True):
                self.unrecorded.add(job.key)
        shown = {**row, "attempt": job.attempt, "status": act.status, "error": act.error, "error_kind": act.kind}
        parts = None if act.record else row.get("component_rows")  # refined LLC: the rows the worker recorded
        for one in parts or [shown]:  # one line per component, each with its own λ̂ and status
            log.info("%s", summary_line({**one, "attempt": job.attempt} if parts else one, label=label,
                                        seconds=None if parts else seconds))
        self._finish(job, act.status)

    def _finish(self, job: Job, status: str) -> None:
        self.final[job.key] = status
        self.counts[status if status in self.counts else "failed"] += 1
        self.jobs.pop(job.key, None)
        self._release(job.claim)
        if job.key not in self.unrecorded:
            self.dirty.add((job.key.run_id, job.key.config_hash))

    def _write_failure(self, ref: CheckpointRef, exc: BaseException, attempt: int, final: bool) -> dict:
        from llc_service.worker.record import write_failure

        return write_failure(self.unit(ref, attempt, final), self.cfg, exc)

    def _try_write_failure(self, ref: CheckpointRef, exc: BaseException, attempt: int, final: bool) -> bool:
        try:
            self._write_failure(ref, exc, attempt, final)
            return True
        except Exception as write_exc:  # noqa: BLE001 - results store down: the retry (or next watcher) records it
            self._refusal("the results store", self.results_uri, write_exc)
            log.error("%s: could not record the failure of attempt %d (%s: %s)", self.label(ref), attempt,
                      type(write_exc).__name__, write_exc)
            return False

    def _release(self, claim: Claim) -> bool:
        """Release ``claim``; on storage trouble keep it in ``unreleased`` (tried again by ``retry_releases``
        and at stop; failing that, its lease runs out by itself). True once nothing more is to be done."""
        try:
            self.store.release(claim)
        except Exception as exc:  # noqa: BLE001
            if claim.key not in self.unreleased:
                log.warning("releasing claim %s failed (%s); trying again (it expires on its own otherwise)",
                            claim.key, exc)
            self.unreleased[claim.key] = claim
            return False
        self.unreleased.pop(claim.key, None)
        return True

    def retry_releases(self) -> None:
        for claim in list(self.unreleased.values()):
            self._release(claim)

    def _release_maybe_held(self) -> None:
        """Claims whose write may have gone through while its confirmation failed: release the ones that are ours."""
        for key in sorted(self.maybe_held - set(self.jobs), key=str):
            try:
                claim = self.store.read(key)
            except Exception:  # noqa: BLE001 - cannot tell: its lease runs out by itself
                continue
            if claim is not None and claim.owner == self.store.owner and claim.is_live():
                self._release(claim)
            self.maybe_held.discard(key)

    # ---- leases ---------------------------------------------------------------------------------------------------

    def renew(self) -> None:
        for key, job in list(self.jobs.items()):
            try:
                job.claim = self.store.renew(job.claim)
            except ClaimLost as exc:
                log.warning("%s: lost our claim (%s); another watcher measures it now", self.label(job.ref), exc)
                if job.in_flight:
                    self.dispatcher().cancel(key)
                del self.jobs[key]
            except Exception as exc:  # noqa: BLE001 - storage trouble: keep measuring, try again next renewal
                log.warning("renewing the claim on %s failed (%s: %s)", self.label(job.ref), type(exc).__name__,
                            exc)

    # ---- stopping -------------------------------------------------------------------------------------------------

    def once_done(self) -> bool:
        return self.targets is not None and not self.jobs and all(k in self.final for k in self.targets)

    def stop(self, patience: float | None = None) -> None:
        """Cancel what is in flight and release every claim we hold (the next watcher measures those). Releases
        that fail on storage trouble are tried again for up to ``patience`` seconds (default: a third of the lease,
        at most 10 s); a claim left over expires by itself within a lease."""
        cancelled = self._dispatcher.cancel_all() if self._dispatcher is not None else []
        if cancelled:
            log.info("stopping: cancelled %d measurement(s) in flight; they will be measured by the next run",
                     len(cancelled))
        for job in list(self.jobs.values()):
            self._release(job.claim)
        self.jobs.clear()
        self._release_maybe_held()
        patience = min(10.0, self.store.lease_seconds / 3) if patience is None else patience
        deadline = time.monotonic() + patience
        while self.unreleased and time.monotonic() < deadline:
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
            self.retry_releases()
        if self.unreleased:
            log.warning("stopping with %d claim(s) not released (storage trouble); they expire within %gs: %s",
                        len(self.unreleased), self.store.lease_seconds,
                        ", ".join(str(k) for k in self.unreleased))

    def summary(self) -> str:
        c = self.counts
        earlier = len(self.final) - c["ok"] - c["diverged"] - c["failed"]
        text = (f"measured {c['ok']} ok, {c['diverged']} diverged, {c['failed']} failed"
                f" ({c['retried']} transient failure(s) retried); {earlier} recorded earlier")
        if self.pending_now:
            text += f"; {len(self.pending_now)} pending: " + "; ".join(
                f"{self.label(r)} ({r.reason})" for r in self.pending_now[:10])
        if self.unrecorded:
            text += f"; {len(self.unrecorded)} outcome(s) could NOT be recorded (results store unavailable)"
        return text
