"""The watcher: poll a source, claim each new complete checkpoint, measure it on Ray, record every outcome once.

One thread, never blocked by a measurement. Each turn of the loop (at most a second apart):

1. every ``interval`` seconds, **list** SOURCE; a complete checkpoint without a final outcome under this
   measurement's identity ``(run_id, config_hash, fingerprint)`` becomes a candidate (its summary file in RESULTS
   tells: ``ok``/``diverged``/permanently ``failed`` are final, a ``transient`` failure is retried while
   ``attempt`` <= ``max_retries``, a timed-out pending checkpoint that is now complete is measured);
2. **claim** candidates in RESULTS (:mod:`llc_service.watcher.claims`) and **dispatch** each as one Ray task
   (:class:`~llc_service.scheduler.ray_runner.Dispatcher`), at most ``max_concurrent`` at once;
3. **collect** finished tasks: ``ok``/``diverged``/permanent failures are recorded (by the worker, or here with
   ``write_failure`` when the worker died or could not write) and their claim released; transient failures
   are recorded and re-dispatched after an exponential back-off (``retry_delay`` · 2^(attempt-1)), holding the
   claim, until ``1 + max_retries`` attempts;
4. **renew** the leases of held claims every quarter lease; a lost claim (another watcher took it over after our
   lease ran out) cancels our task, the other watcher records the result;
5. rebuild the wandb trajectory run of each (run, config) that got a new outcome (never fatal).

Exactly-once comes from the result file names (a re-measurement overwrites its own file); claims keep two
watchers from measuring the same checkpoint at the same time. Stopping (SIGINT/SIGTERM, ``stop_after``,
``stop``) cancels the measurements in flight and releases their claims: nothing half-done is recorded, and the
next watcher measures them.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from llc_service.bucket.ref import CheckpointRef
from llc_service.config import MeasureConfig
from llc_service.errors import PERMANENT, TRANSIENT, IncompleteCheckpoint, PermanentFailure, TransientFailure, classify
from llc_service.watcher.claims import Claim, ClaimKey, ClaimLost, ClaimStore

log = logging.getLogger(__name__)

FINAL_STATUSES = ("ok", "diverged")
INCOMPLETE = "IncompleteCheckpoint"
MAX_BACKOFF = 600.0


# -----------------------------------------------------------------------------------------------------------------
# what runs on the Ray worker


def measure_unit(checkpoint, data_uri: str, results_uri: str, cfg: MeasureConfig, run_id: str | None = None,
                 attempt: int = 1, use_wandb: bool = True) -> dict:
    """``measure_checkpoint``, plus whether its row reached Parquet (``recorded``) and a kind for any exception.

    ``measure_checkpoint`` writes a row for every failure it meets, but if writing the row itself fails (results
    store down) the exception escapes; the watcher then records it, or retries when it is transient.
    """
    from llc_service.worker.measure import measure_checkpoint

    try:
        row = measure_checkpoint(checkpoint, data_uri, results_uri, cfg, run_id=run_id, attempt=attempt,
                                 use_wandb=use_wandb)
    except Exception as exc:  # noqa: BLE001 - the watcher decides what an escaped error means
        return {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "error_kind": classify(exc),
                "error_type": type(exc).__name__,
                "attempt": attempt, "recorded": False}
    return {**dict(row), "recorded": True}


# -----------------------------------------------------------------------------------------------------------------
# the watcher


@dataclass
class Job:
    """A checkpoint this watcher holds a claim on: in flight, or waiting out a back-off before the next attempt."""

    key: ClaimKey
    ref: CheckpointRef
    claim: Claim
    attempt: int
    in_flight: bool = False
    retry_at: float | None = None
    started: float = field(default_factory=time.monotonic)


def _label(ref: CheckpointRef, run_id: str | None = None) -> str:
    run = run_id or ref.run_id
    return f"{run} step {ref.step}" if ref.step is not None else f"{run} {ref.uri}"


def _progress_line(label: str, row: dict, seconds: float) -> str:
    status = row.get("status")
    tries = f", attempt {row.get('attempt')}" if (row.get("attempt") or 1) > 1 else ""
    if status == "ok":
        mean, std = row.get("llc_mean"), row.get("llc_std")
        est = f"λ̂={mean:.4g}±{std:.2g}" if mean is not None and std is not None else f"λ̂={mean}"
        return f"{label}: ok {est} ({seconds:.1f}s{tries})"
    error = str(row.get("error") or "").strip().splitlines()[0][:300] if row.get("error") else ""
    return f"{label}: {status} [{row.get('error_kind')}] {error} ({seconds:.1f}s{tries})"


class Watcher:
    """State of one watcher; :func:`watch` is the entry point. Not thread-safe: one loop drives it."""

    def __init__(self, source: str, data_uri: str, results_uri: str, cfg: MeasureConfig, *, run_id: str | None,
                 once: bool, interval: float, use_wandb: bool, max_concurrent: int | None,
                 pending_timeout: float | None, retry_delay: float, make_dispatcher, store: ClaimStore):
        from llc_service.bucket import get_source

        self.source_uri, self.data_uri, self.results_uri, self.cfg = str(source), str(data_uri), str(results_uri), cfg
        self.run_id, self.once, self.interval, self.use_wandb = run_id, once, interval, use_wandb
        self.max_concurrent, self.pending_timeout, self.retry_delay = max_concurrent, pending_timeout, retry_delay
        self.config_hash = cfg.config_hash()
        self.source = get_source(self.source_uri, storage_options=cfg.storage_options, marker_file=cfg.marker_file)
        self._make_dispatcher, self._dispatcher, self.store = make_dispatcher, None, store
        self.jobs: dict[ClaimKey, Job] = {}
        self.queue: dict[ClaimKey, tuple[CheckpointRef, int]] = {}  # candidates not claimed yet -> (ref, attempt)
        self.final: dict[ClaimKey, str] = {}  # key -> status of its final outcome (recorded, or seen in RESULTS)
        self.unrecorded: set[ClaimKey] = set()  # final outcome that could not be written (results store down)
        self.targets: dict[ClaimKey, CheckpointRef] | None = None  # --once: the complete checkpoints of the 1st list
        self.pending: dict[tuple[str, str], tuple[float, str]] = {}  # (uri, fp) -> (first seen, reason)
        self.pending_now: list[CheckpointRef] = []
        self.held_elsewhere: dict[ClaimKey, str] = {}
        self.counts = {"ok": 0, "diverged": 0, "failed": 0, "retried": 0}
        self.dirty: set[tuple[str, str]] = set()
        self.last_trajectory = 0.0
        self.storage_trouble_until = 0.0
        self.last_picture: tuple | None = None

    def dispatcher(self):
        """Ray is joined (or started) at the first dispatch: a watcher with nothing to measure never needs it."""
        if self._dispatcher is None:
            self._dispatcher = self._make_dispatcher()
        return self._dispatcher

    # ---- identity and RESULTS -----------------------------------------------------------------------------------

    def key(self, ref: CheckpointRef) -> ClaimKey:
        return ClaimKey(self.run_id or ref.run_id, self.config_hash, ref.fingerprint)

    def _summary_path(self, ref: CheckpointRef) -> str:
        from llc_service.sinks.parquet import SUMMARY, result_relpath

        return result_relpath(SUMMARY, {"run_id": self.run_id or ref.run_id, "config_hash": self.config_hash,
                                        "checkpoint_step": ref.step, "checkpoint_fingerprint": ref.fingerprint})

    def recorded(self, refs: list[CheckpointRef]) -> dict[ClaimKey, dict]:
        """{key: {status, error, error_kind, attempt}} of the summary rows that exist for ``refs``.

        Reads only the folders of the runs concerned and only the files of these checkpoints (deterministic names),
        so a poll costs one listing per run plus one small GET per candidate, however many results exist.
        Raises on storage errors (the caller skips this poll).
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        from llc_service.sinks._fs import results_fs

        if not refs:
            return {}
        fs, root = results_fs(self.results_uri, self.cfg.storage_options)
        wanted = {f"{root}/{self._summary_path(r)}": r for r in refs}
        present: set[str] = set()
        for folder in {p.rsplit("/", 1)[0] for p in wanted}:
            try:
                present.update(p.rstrip("/") for p in fs.find(folder))
            except FileNotFoundError:
                continue
        paths = sorted(p for p in wanted if p in present or p.lstrip("/") in present)
        blobs = fs.cat(paths, on_error="raise") if paths else {}
        out = {}
        cols = ["status", "error", "error_kind", "attempt"]
        for p in paths:
            blob = blobs.get(p) if p in blobs else blobs.get(p.lstrip("/"))
            try:
                pf = pq.ParquetFile(pa.BufferReader(blob))
                table = pf.read(columns=[c for c in cols if c in pf.schema_arrow.names])
                row = {c: (table.column(c)[0].as_py() if c in table.column_names and table.num_rows else None)
                       for c in cols}
            except Exception as exc:  # noqa: BLE001 - a corrupt result file: measure again, it gets overwritten
                log.warning("result file %s is unreadable (%s); measuring that checkpoint again", p, exc)
                continue
            out[self.key(wanted[p])] = row
        return out

    def decide(self, ref: CheckpointRef, row: dict | None) -> tuple[str, int]:
        """("final" | "measure", attempt) for a complete checkpoint given its recorded row (None: no row)."""
        if row is None:
            return "measure", 1
        status, kind, error = row.get("status"), row.get("error_kind"), str(row.get("error") or "")
        attempt = int(row.get("attempt") or 1)
        if status in FINAL_STATUSES:
            return "final", attempt
        if status == "failed" and error.startswith(INCOMPLETE):
            return "measure", 1  # it was recorded as stuck while pending; now it is complete
        if status == "failed" and kind == TRANSIENT and attempt < 1 + self.cfg.max_retries:
            return "measure", attempt + 1
        return "final", attempt

    # ---- polling --------------------------------------------------------------------------------------------------

    def poll(self) -> bool:
        """List the source (in --once mode only the first time) and queue candidates. False if storage failed."""
        now = time.monotonic()
        if self.once and self.targets is not None:
            refs = [r for k, r in self.targets.items() if k not in self.final and k not in self.jobs]
            pending: list[CheckpointRef] = []
        else:
            try:
                listed = self.source.list_checkpoints()
            except Exception as exc:  # noqa: BLE001 - a storage hiccup: try again next poll
                log.warning("listing %s failed (%s: %s); trying again in %gs", self.source_uri,
                            type(exc).__name__, exc, self.interval)
                return False
            refs = [r for r in listed if r.is_complete]
            pending = [r for r in listed if not r.is_complete]
            self.pending_now = pending
        # a checkpoint recorded as stuck while pending is looked at again: it may have completed since
        fresh = [r for r in refs if self.final.get(self.key(r), INCOMPLETE) == INCOMPLETE
                 and self.key(r) not in self.jobs]
        try:
            rows = self.recorded(fresh)
        except Exception as exc:  # noqa: BLE001
            log.warning("reading results under %s failed (%s: %s); trying again in %gs", self.results_uri,
                        type(exc).__name__, exc, self.interval)
            return False
        if self.once and self.targets is None:
            self.targets = {self.key(r): r for r in refs}
        new, retry, already = [], [], 0
        for ref in fresh:
            key = self.key(ref)
            verdict, attempt = self.decide(ref, rows.get(key))
            if verdict == "final":
                self.final[key] = rows[key]["status"]
                already += 1
                continue
            (retry if attempt > 1 else new).append(ref)
            self.queue[key] = (ref, attempt)
        self._track_pending(pending, now)
        if self.once and self.last_picture is not None:
            return True  # --once re-checks its first list only; nothing new to report
        picture = (len(refs), len(self.final), len(new), len(retry), tuple((r.uri, r.reason) for r in pending))
        if picture != self.last_picture:
            log.info("%s: %d complete checkpoint(s) (%d new, %d to retry, %d already measured), %d pending",
                     self.source_uri, len(refs), len(new), len(retry), already, len(pending))
            for ref in new:
                log.info("found %s (%s)", _label(ref, self.run_id), ref.uri)
            self.last_picture = picture
        return True

    def _track_pending(self, pending: list[CheckpointRef], now: float) -> None:
        seen = set()
        for ref in pending:
            pk = (ref.uri, ref.fingerprint)
            seen.add(pk)
            first, reason = self.pending.get(pk, (now, None))
            if reason != ref.reason:
                log.info("pending: %s (%s)", _label(ref, self.run_id), ref.reason)
            self.pending[pk] = (first, ref.reason)
            if self.pending_timeout is not None and now - first >= self.pending_timeout:
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
                self.final[key] = INCOMPLETE
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
        self.final[key] = INCOMPLETE
        self.counts["failed"] += 1
        self.dirty.add((key.run_id, key.config_hash))
        log.info("%s: failed [permanent] incomplete for %.0fs: %s", _label(ref, self.run_id), age, ref.reason)

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
                log.warning("claiming %s failed (%s: %s); trying again shortly", ref.uri, type(exc).__name__, exc)
                self.queue[key] = (ref, attempt)
                self.storage_trouble_until = now + min(5.0, self.interval)
                return

    def _room(self) -> bool:
        return not self.max_concurrent or self.in_flight() < self.max_concurrent

    def _claim_and_submit(self, key: ClaimKey, ref: CheckpointRef, attempt: int) -> None:
        previous = self.store.read(key)
        if previous is not None and previous.owner == self.store.owner and previous.is_live():
            # ours, from a claim whose write went through but whose confirmation failed (storage trouble)
            claim = previous
        else:
            claim = self.store.try_claim(key)
        if claim is None:
            holder = previous.owner if previous is not None else "another watcher"
            if self.held_elsewhere.get(key) != holder:
                log.info("%s is being measured by %s; leaving it to them", _label(ref, self.run_id), holder)
            self.held_elsewhere[key] = holder
            return
        self.held_elsewhere.pop(key, None)
        # someone may have recorded it between our listing and our claim
        row = self.recorded([ref]).get(key)
        verdict, row_attempt = self.decide(ref, row)
        if verdict == "final":
            self.final[key] = row["status"]
            self._release(claim)
            return
        attempt = max(attempt, row_attempt)
        if previous is not None and previous.released_at is None and previous.owner != self.store.owner:
            # we took over an expired claim: its owner died or hung while measuring; that was an attempt too
            log.info("%s: took over the expired claim of %s (attempt %d)", _label(ref, self.run_id),
                     previous.owner, previous.attempt)
            attempt = max(attempt, previous.attempt + 1)
        job = Job(key=key, ref=ref, claim=claim, attempt=attempt)
        self.jobs[key] = job
        self._submit(job)

    def _submit(self, job: Job) -> None:
        unit = {"checkpoint": job.ref, "data_uri": self.data_uri, "results_uri": self.results_uri,
                "run_id": self.run_id, "attempt": job.attempt, "use_wandb": self.use_wandb}
        self.dispatcher().submit(unit, token=job.key)
        job.in_flight, job.retry_at, job.started = True, None, time.monotonic()
        log.info("claimed and dispatched %s%s", _label(job.ref, self.run_id),
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
        label = _label(job.ref, self.run_id)
        status, kind = row.get("status"), row.get("error_kind")
        recorded = bool(row.get("recorded"))
        row = {**row, "attempt": job.attempt}
        if status in FINAL_STATUSES and recorded:
            log.info("%s", _progress_line(label, row, seconds))
            self._finish(job, status)
            return
        error = str(row.get("error") or f"no result (status {status!r})")
        if status not in ("failed",) + FINAL_STATUSES:
            kind = PERMANENT
        if kind == TRANSIENT and job.attempt < 1 + self.cfg.max_retries:
            if not recorded:
                self._try_write_failure(job.ref, TransientFailure(error), job.attempt, final=False)
            delay = min(MAX_BACKOFF, self.retry_delay * 2 ** (job.attempt - 1))
            log.warning("%s: attempt %d of %d failed [transient] %s; retrying in %.1fs", label, job.attempt,
                        1 + self.cfg.max_retries, error.splitlines()[0][:300] if error else "", delay)
            self.counts["retried"] += 1
            job.attempt += 1
            job.retry_at = time.monotonic() + delay
            return
        if not recorded:
            if kind == TRANSIENT:
                error = f"{error} (gave up after {job.attempt} attempts)"
            exc = TransientFailure(error) if kind == TRANSIENT else PermanentFailure(error)
            if not self._try_write_failure(job.ref, exc, job.attempt, final=True):
                self.unrecorded.add(job.key)
        log.info("%s", _progress_line(label, {**row, "status": "failed" if status != "diverged" else status,
                                               "error": error, "error_kind": kind}, seconds))
        self._finish(job, "failed" if status != "diverged" else status)

    def _finish(self, job: Job, status: str) -> None:
        self.final[job.key] = status
        self.counts[status if status in self.counts else "failed"] += 1
        self.jobs.pop(job.key, None)
        self._release(job.claim)
        if job.key not in self.unrecorded:
            self.dirty.add((job.key.run_id, job.key.config_hash))

    def _write_failure(self, ref: CheckpointRef, exc: BaseException, attempt: int, final: bool) -> dict:
        from llc_service.worker.measure import MeasureRequest, write_failure

        req = MeasureRequest(checkpoint_uri=ref.uri, data_uri=self.data_uri, results_uri=self.results_uri,
                             config=self.cfg.to_dict(), run_id=self.run_id, attempt=attempt,
                             use_wandb=self.use_wandb and final, ref=dataclasses.asdict(ref))
        return write_failure(req, exc)

    def _try_write_failure(self, ref: CheckpointRef, exc: BaseException, attempt: int, final: bool) -> bool:
        try:
            self._write_failure(ref, exc, attempt, final)
            return True
        except Exception as write_exc:  # noqa: BLE001 - results store down: the retry (or next watcher) records it
            log.error("%s: could not record the failure of attempt %d (%s: %s)", _label(ref, self.run_id), attempt,
                      type(write_exc).__name__, write_exc)
            return False

    def _release(self, claim: Claim) -> None:
        try:
            self.store.release(claim)
        except Exception as exc:  # noqa: BLE001 - the lease runs out by itself
            log.warning("releasing claim %s failed (%s); it expires on its own", claim.key, exc)

    # ---- leases ---------------------------------------------------------------------------------------------------

    def renew(self) -> None:
        for key, job in list(self.jobs.items()):
            try:
                job.claim = self.store.renew(job.claim)
            except ClaimLost as exc:
                log.warning("%s: lost our claim (%s); another watcher measures it now", _label(job.ref, self.run_id),
                            exc)
                if job.in_flight:
                    self.dispatcher().cancel(key)
                del self.jobs[key]
            except Exception as exc:  # noqa: BLE001 - storage trouble: keep measuring, try again next renewal
                log.warning("renewing the claim on %s failed (%s: %s)", _label(job.ref, self.run_id),
                            type(exc).__name__, exc)

    # ---- trajectory -----------------------------------------------------------------------------------------------

    def update_trajectories(self) -> None:
        """Rebuild the wandb trajectory run of each (run, config) with new outcomes. Never raises."""
        dirty, self.dirty = self.dirty, set()
        self.last_trajectory = time.monotonic()
        if not (self.use_wandb and self.cfg.wandb_project) or not dirty:
            return
        try:
            from llc_service.report.trajectory import trajectory_table
            from llc_service.report.wandb_trajectory import log_trajectory
            from llc_service.sinks import read_summary

            summary = read_summary(self.results_uri, storage_options=self.cfg.storage_options)
            for run, cfg_hash in sorted(dirty):
                table = trajectory_table(summary, run_id=run)
                ids = log_trajectory(table, self.cfg.wandb_project, entity=self.cfg.wandb_entity, run_id=run,
                                     config_hash=cfg_hash, results_uri=self.results_uri)
                if ids:
                    log.info("wandb trajectory of %s [%s] rebuilt (%s)", run, cfg_hash, ", ".join(ids))
                else:
                    log.warning("wandb trajectory of %s [%s] not rebuilt (see the warning above); the Parquet "
                                "results are intact", run, cfg_hash)
        except Exception as exc:  # noqa: BLE001 - the view must never cost a result
            log.warning("wandb trajectory update failed (%s: %s)", type(exc).__name__, exc)

    # ---- stopping -------------------------------------------------------------------------------------------------

    def once_done(self) -> bool:
        return (self.targets is not None and not self.jobs
                and all(k in self.final for k in self.targets))

    def stop(self) -> None:
        """Cancel what is in flight and release every claim we hold (the next watcher measures those)."""
        cancelled = self._dispatcher.cancel_all() if self._dispatcher is not None else []
        if cancelled:
            log.info("stopping: cancelled %d measurement(s) in flight; they will be measured by the next run",
                     len(cancelled))
        for job in list(self.jobs.values()):
            self._release(job.claim)
        self.jobs.clear()

    def summary(self) -> str:
        c = self.counts
        earlier = len(self.final) - c["ok"] - c["diverged"] - c["failed"]
        text = (f"measured {c['ok']} ok, {c['diverged']} diverged, {c['failed']} failed"
                f" ({c['retried']} transient failure(s) retried); {earlier} recorded earlier")
        if self.pending_now:
            text += f"; {len(self.pending_now)} pending: " + "; ".join(
                f"{_label(r, self.run_id)} ({r.reason})" for r in self.pending_now[:10])
        if self.unrecorded:
            text += f"; {len(self.unrecorded)} outcome(s) could NOT be recorded (results store unavailable)"
        return text


def _order(ref: CheckpointRef) -> tuple:
    return (ref.run_id, ref.step is None, ref.step or 0, ref.uri)


# -----------------------------------------------------------------------------------------------------------------
# entry point


def _usage_error(message: str) -> int:
    import sys

    log.error("%s", message)
    print(f"llc-service watch: error: {message}", file=sys.stderr)
    return 2


def _check_location(what: str, uri: str, storage_options: dict, must_exist: bool, may_appear: bool) -> str | None:
    """An error message if ``uri`` clearly does not exist (local path, or the bucket of an object store).

    ``may_appear``: on an object store a prefix exists only once something is written under it, so a source
    prefix that is not there yet (training has not saved its first checkpoint) is a warning, not an error.
    """
    from llc_service.bucket.fs import LOCAL_PROTOCOLS, open_fs, split_uri

    protocol, _ = split_uri(uri)
    try:
        fs, path = open_fs(uri, storage_options)
        if protocol in LOCAL_PROTOCOLS:
            return f"{what} {uri} does not exist" if must_exist and not os.path.exists(path) else None
        if protocol in ("s3", "s3a", "gs", "gcs"):
            bucket = path.split("/", 1)[0]
            if not fs.exists(bucket):
                return f"{what} {uri}: bucket {bucket!r} does not exist (or is not visible with these credentials)"
        if must_exist and not fs.exists(path):
            if not may_appear:
                return f"{what} {uri} does not exist"
            log.warning("%s %s has nothing in it yet; waiting for checkpoints to appear", what, uri)
    except ImportError as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001
        return f"cannot reach {what} {uri}: {type(exc).__name__}: {exc}"
    return None


def watch(source: str, data_uri: str, results_uri: str, cfg: MeasureConfig, run_id: str | None = None,
          once: bool = False, interval: float = 60.0, address: str | None = None, use_wandb: bool = True,
          max_concurrent: int | None = None, stop_after: float | None = None, *,
          pending_timeout: float | None = 3600.0, retry_delay: float = 10.0, stop: threading.Event | None = None,
          ray_init: dict | None = None, until: Callable[[], bool] | None = None) -> int:
    """Measure every complete checkpoint under ``source`` exactly once under ``cfg``; returns an exit code.

    ``once``: measure what is there now and return once every complete checkpoint found has a recorded outcome
    (checkpoints still pending are logged). Otherwise poll every ``interval`` seconds until SIGINT/SIGTERM,
    ``stop_after`` seconds or ``stop.set()``. ``pending_timeout``: a checkpoint pending that long with unchanged
    files (a truncated file, a missing shard, an upload that died) gets a failed row naming what is missing;
    it is still measured if it completes later (None: wait forever). ``retry_delay``: back-off before the
    first retry of a transient failure, doubled for each further one (``cfg.max_retries`` retries at most).
    Ray: ``address``, else ``RAY_ADDRESS``, else a private local cluster (``ray_init``: its ``ray.init``
    arguments, e.g. ``num_cpus``); if Ray is already initialised in this process, that cluster is used.
    ``until``: polled while watching; once it returns True (e.g. the producer has exited) the watcher lists the
    source one last time and finishes like ``once`` (the demo uses it to stop after training).

    Returns 0 when done or stopped, 1 if an outcome could not be recorded (results store unavailable through
    every retry), 2 for usage errors (missing source or data, bad arguments).
    """
    if interval <= 0 or not math.isfinite(interval):
        return _usage_error(f"--interval must be > 0 (got {interval})")
    if max_concurrent is not None and max_concurrent < 1:
        return _usage_error(f"--max-concurrent must be >= 1 (got {max_concurrent})")
    if stop_after is not None and stop_after < 0:
        return _usage_error(f"--stop-after must be >= 0 (got {stop_after})")
    if pending_timeout is not None and pending_timeout <= 0:
        return _usage_error(f"pending_timeout must be > 0 or None (got {pending_timeout})")
    try:
        cfg.validate()
        from llc_service.bucket import get_source

        get_source(source, storage_options=cfg.storage_options, marker_file=cfg.marker_file)
    except ValueError as exc:
        return _usage_error(str(exc))
    opts = cfg.storage_options
    for what, uri, must, may_appear in (("source", source, True, True), ("data", data_uri, True, False),
                                        ("results", results_uri, False, True)):
        problem = _check_location(what, str(uri), opts, must, may_appear)
        if problem:
            return _usage_error(problem)

    import ray

    from llc_service.scheduler.ray_runner import Dispatcher, connect

    started_ray = not ray.is_initialized()

    stop_event = stop or threading.Event()

    def make_dispatcher():
        connect(address or os.environ.get("RAY_ADDRESS") or "local", **(ray_init or {}))
        _install_signal_handlers(stop_event)  # ray.init installs its own SIGTERM handler (exit 15): ours again
        return Dispatcher(cfg, measure_unit, ray_retries=False)

    restore = _install_signal_handlers(stop_event)
    try:
        store = ClaimStore(results_uri, opts, lease_seconds=cfg.lease_seconds)
        watcher = Watcher(source, data_uri, results_uri, cfg, run_id=run_id, once=once, interval=interval,
                          use_wandb=use_wandb, max_concurrent=max_concurrent, pending_timeout=pending_timeout,
                          retry_delay=retry_delay, make_dispatcher=make_dispatcher, store=store)
        log.info("watching %s (config %s, %s) -> %s as %s; lease %gs, %s", source, watcher.config_hash,
                 "once" if once else f"every {interval:g}s", results_uri, store.owner, cfg.lease_seconds,
                 f"at most {max_concurrent} at once" if max_concurrent else "no concurrency cap")
        return _loop(watcher, stop_event, once, interval, stop_after, cfg.lease_seconds, until)
    finally:
        _restore_signal_handlers(restore)
        if started_ray and ray.is_initialized():
            ray.shutdown()


def _loop(w: Watcher, stop_event: threading.Event, once: bool, interval: float, stop_after: float | None,
          lease_seconds: float, until: Callable[[], bool] | None = None) -> int:
    t0 = time.monotonic()
    next_poll = t0
    renew_every = max(0.2, lease_seconds / 4)
    next_renew = t0 + renew_every
    trajectory_gap = min(10.0, interval)
    reason = "done"
    try:
        while True:
            now = time.monotonic()
            if stop_event.is_set():
                reason = "stop requested"
                break
            if stop_after is not None and now - t0 >= stop_after:
                reason = f"--stop-after {stop_after:g}s"
                break
            if until is not None and not once and _true(until):
                log.info("producer finished: measuring what is there, then stopping")
                once = w.once = True
                w.targets, w.last_picture = None, None  # the next listing (now) is the final one, and logged
                next_poll = now
            if now >= next_poll:
                w.poll()
                next_poll = time.monotonic() + interval
            w.dispatch()
            if now >= next_renew:
                w.renew()
                next_renew = time.monotonic() + renew_every
            if w.dirty and time.monotonic() - w.last_trajectory >= trajectory_gap:
                w.update_trajectories()
            if once and w.once_done():
                break
            wake = [next_poll, next_renew] + [j.retry_at for j in w.jobs.values() if j.retry_at is not None]
            if stop_after is not None:
                wake.append(t0 + stop_after)
            timeout = min(1.0, max(0.02, min(wake) - time.monotonic()))
            if w.in_flight():
                w.collect(timeout)
            else:
                stop_event.wait(timeout)
    finally:
        w.stop()
        w.update_trajectories()
    log.info("watcher stopped (%s): %s", reason, w.summary())
    return 1 if w.unrecorded else 0


def _true(predicate: Callable[[], bool]) -> bool:
    try:
        return bool(predicate())
    except Exception as exc:  # noqa: BLE001 - a broken predicate must not stop the watcher
        log.warning("until() raised %s: %s; ignoring it", type(exc).__name__, exc)
        return False


def _install_signal_handlers(event: threading.Event) -> list:
    """SIGINT/SIGTERM set ``event`` (a clean stop); only possible from the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return []
    saved = []

    def handler(signum, _frame):
        log.info("received %s: stopping (in-flight measurements are cancelled, claims released)",
                 signal.Signals(signum).name)
        event.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        saved.append((sig, signal.signal(sig, handler)))
    return saved


def _restore_signal_handlers(saved: list) -> None:
    for sig, previous in saved:
        signal.signal(sig, previous)
