"""Ray layer: one Ray task per checkpoint, placed on one node, results streamed back as they finish.

Why tasks and not actors: a measurement is a pure function of (checkpoint, data, config) that writes its results
under a deterministic name. Ray re-runs a task whose worker or node died (``max_retries``); the re-run overwrites
the same files, so a unit leaves exactly one result however many times it ran. Exceptions from the measurement
itself are *not* retried (bad checkpoint, bad config): only :class:`~llc_service.errors.TransientError` is, and a
failed row marked ``error_kind="transient"``, or a transient exception escaping the unit
(:func:`llc_service.errors.classify`), is turned into one (see :func:`_run_unit`).

A *unit* is a :class:`~llc_service.worker.unit.MeasureUnit` (a plain mapping with the same keys is converted).
The unit function is called ``unit_fn(unit, cfg)`` and returns the summary row; it defaults to
:func:`llc_service.worker.measure.measure_unit`.

``ray`` is imported inside the functions so that importing this module (and ``llc-service --help``) stays fast.
"""

from __future__ import annotations

import logging
import math
import socket
import sys
import time
import traceback
from collections import deque
from typing import Any, Callable, Iterator

from llc_service.errors import PERMANENT, TRANSIENT, TransientError, classify
from llc_service.worker.unit import MeasureUnit

log = logging.getLogger(__name__)

UnitFn = Callable[..., dict]


def connect(address: str | None = None, **init_kwargs: Any) -> None:
    """Join a Ray cluster, or start a local one: the same call on a laptop and inside a Ray job.

    With ``address=None`` Ray looks at ``RAY_ADDRESS`` (set for a job's entrypoint by Ray Jobs, so the entrypoint
    joins its cluster), then at the last cluster started on this machine with ``ray start``, and otherwise starts a
    private single-node cluster that lives as long as this process. ``address="local"`` always starts a new one.
    Calling it twice is harmless. ``init_kwargs`` go to ``ray.init`` (e.g. ``num_cpus`` for a local cluster).
    """
    import ray

    if ray.is_initialized():
        return
    # the dashboard is only started for a new local cluster, where it costs seconds and is not needed;
    # the argument is ignored when joining an existing cluster
    init_kwargs.setdefault("include_dashboard", False)
    ray.init(address=address, ignore_reinit_error=True, **init_kwargs)
    log.info("ray: connected, resources %s", {k: v for k, v in ray.cluster_resources().items()
                                              if k in ("CPU", "GPU", "memory")})


def task_options(cfg, cluster_resources: dict[str, float]) -> dict[str, Any]:
    """Ray options of one measurement task, from the config and what the cluster has.

    GPUs are requested only when the cluster has some and the config does not pin the CPU, so the same config runs
    on a laptop and on a GPU cluster. A measurement of ``processes`` N > 1 (several chain groups, or one model
    sharded over N) reserves N of them on its node (a Ray task runs on one node): N GPUs, or on CPU N CPUs at least.
    ``OMP_NUM_THREADS`` is the task's CPUs per process (Ray's default is 1 for some tasks, which makes torch crawl on
    CPU); ``runtime_env`` env_vars merge with the job's own.
    """
    use_gpu = (cluster_resources.get("GPU", 0) > 0 and cfg.gpus_per_measurement > 0
               and str(cfg.device) != "cpu")
    processes = max(1, int(cfg.processes or 1))
    cpus = cfg.cpus_per_measurement if use_gpu else max(cfg.cpus_per_measurement, processes)
    threads = max(1, math.floor(cpus / processes))
    opts: dict[str, Any] = {
        "num_cpus": cpus,
        "max_retries": cfg.max_retries,
        "retry_exceptions": [TransientError],
        "runtime_env": {"env_vars": {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}},
    }
    if use_gpu:
        opts["num_gpus"] = max(cfg.gpus_per_measurement, processes) if processes > 1 else cfg.gpus_per_measurement
    return opts


def failed_row(unit: MeasureUnit, error: str, kind: str, error_type: str | None = None) -> dict:
    """A summary-like row for a unit that produced none (worker died on every attempt, unit function raised)."""
    ref = unit.ref
    return {
        "run_id": unit.run_id or (ref.run_id if ref else None),
        "checkpoint_uri": unit.checkpoint_uri,
        "checkpoint_step": ref.step if ref else None,
        "checkpoint_fingerprint": ref.fingerprint if ref else None,
        "data_fingerprint": unit.data_fingerprint,
        "status": "failed",
        "error": error,
        "error_kind": kind,
        "error_type": error_type,
        "attempt": unit.attempt,
    }


def _run_unit(unit_fn: UnitFn | None, unit: MeasureUnit, cfg, raise_transient: bool = True) -> dict:
    """Body of the Ray task (runs on a worker): call the unit function, classify its outcome for Ray.

    - a row with ``status == "failed"`` and ``error_kind == "transient"`` → raise :class:`TransientError` so that
      Ray retries (storage hiccups); the row rides along and is reported if every attempt fails;
    - :class:`TransientError` raised by the unit → re-raised (retried);
    - a transient exception escaping the unit (``classify`` says so: the unit could not even record its failure,
      e.g. the results store was down) → :class:`TransientError` (retried);
    - any other exception → a failed row with the traceback, *not* retried (it would fail the same way).

    ``raise_transient=False`` (callers that retry themselves, see :class:`Dispatcher`): a transient row is
    returned as it is and a raised :class:`TransientError` becomes a transient failed row.
    """
    import ray

    if unit_fn is None:
        from llc_service.worker.measure import measure_unit as unit_fn
    node = ray.get_runtime_context().get_node_id()
    uri = unit.checkpoint_uri
    # goes to the worker log, which Ray forwards to the driver's stderr
    print(f"[llc-service] unit started: {uri} on {socket.gethostname()} node {node[:12]}", file=sys.stderr,
          flush=True)
    try:
        row = unit_fn(unit, cfg)
    except TransientError as exc:
        if raise_transient:
            raise
        return dict(exc.row) if exc.row else failed_row(unit, f"{type(exc).__name__}: {exc}", TRANSIENT,
                                                        type(exc).__name__)
    except Exception as exc:  # an application error is a result, not a crash
        kind = classify(exc)
        row = failed_row(unit, f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=20)}", kind,
                         type(exc).__name__)
        if kind == TRANSIENT and raise_transient:  # e.g. the results store was down when the row was written
            raise TransientError(f"{type(exc).__name__}: {exc}", row=row) from exc
        return row
    row = dict(row) if row is not None else failed_row(unit, "unit function returned None", PERMANENT)
    if raise_transient and row.get("status") == "failed" and row.get("error_kind") == TRANSIENT:
        raise TransientError(str(row.get("error")), row=row)
    return row


def _row_from_error(unit: MeasureUnit, exc: BaseException) -> dict:
    """Turn what ``ray.get`` raised into a failed row; nothing escapes as an exception."""
    import ray.exceptions as rex

    cause = getattr(exc, "cause", None)
    if isinstance(exc, TransientError) or isinstance(cause, TransientError):
        err = cause if isinstance(cause, TransientError) else exc
        row = dict(err.row) if getattr(err, "row", None) else failed_row(unit, str(err), TRANSIENT)
        row["error"] = f"{row.get('error')} (gave up after retries)"
        return row
    if isinstance(exc, (rex.WorkerCrashedError, rex.NodeDiedError, rex.ObjectLostError, rex.OutOfMemoryError)):
        return failed_row(unit, f"{type(exc).__name__} on every attempt: {exc}", TRANSIENT)
    if isinstance(exc, rex.TaskCancelledError):
        return failed_row(unit, "cancelled", TRANSIENT)
    return failed_row(unit, f"{type(exc).__name__}: {exc}", PERMANENT)


def _progress_bar(total: int, enabled: bool | None):
    if enabled is False or (enabled is None and not sys.stderr.isatty()):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="checkpoints", unit="ckpt", file=sys.stderr)


def run_measurements(units: list[MeasureUnit | dict], cfg, unit_fn: UnitFn | None = None, *,
                     max_concurrent: int | None = None,
                     address: str | None = None, progress: bool | None = None,
                     poll_seconds: float = 60.0) -> Iterator[tuple[dict, dict]]:
    """Run one Ray task per unit and yield ``(unit, row)`` as each finishes, in completion order.

    Every unit yields exactly one row: the unit function's own, or a failed row (``error_kind`` ``transient`` when
    workers died or storage failed on every attempt, ``permanent`` for an exception). ``max_concurrent`` caps the
    tasks in flight (default: all at once; Ray queues what does not fit). Connects with :func:`connect` if Ray is
    not initialised yet. Progress: one log line per unit submitted and finished, a tqdm bar on a terminal
    (``progress=None`` follows ``cfg.progress``, and a TTY check when that is None too).
    """
    import ray

    connect(address)
    opts = task_options(cfg, ray.cluster_resources())
    remote = ray.remote(_run_unit).options(**opts)
    cfg_ref = ray.put(cfg)  # one copy in the object store, shared by every task
    given = {id(u): u for u in units}  # each unit is yielded back as the caller gave it (a dict stays a dict)
    units = [(MeasureUnit.of(u), id(u)) for u in units]
    limit = max_concurrent if max_concurrent and max_concurrent > 0 else len(units)
    waiting = deque(units)
    in_flight: dict[Any, tuple[MeasureUnit, int, float]] = {}
    bar = _progress_bar(len(units), progress if progress is not None else getattr(cfg, "progress", None))
    log.info("ray: %d unit(s), %s per unit, at most %d at once", len(units),
             {k: v for k, v in opts.items() if k in ("num_cpus", "num_gpus")}, limit)
    try:
        while waiting or in_flight:
            while waiting and len(in_flight) < limit:
                unit, key = waiting.popleft()
                ref = remote.remote(unit_fn, unit, cfg_ref)
                in_flight[ref] = (unit, key, time.monotonic())
                log.info("unit submitted: %s", unit.checkpoint_uri)
            done, _ = ray.wait(list(in_flight), num_returns=1, timeout=poll_seconds)
            if not done:
                log.info("ray: %d unit(s) running, %d waiting", len(in_flight), len(waiting))
                continue
            for ref in done:
                unit, key, t0 = in_flight.pop(ref)
                try:
                    row = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - every Ray failure becomes a failed row
                    row = _row_from_error(unit, exc)
                log.info("unit finished: %s -> %s%s (%.1fs)", row.get("checkpoint_uri") or unit.checkpoint_uri,
                         row.get("status"),
                    f" [{row.get('error_kind')}]" if row.get("status") != "ok" else "", time.monotonic() - t0)
                if bar is not None:
                    bar.update(1)
                yield given[key], row
    finally:
        # a consumer that stops early (or Ctrl-C) should not leave measurements running on the cluster
        for ref in in_flight:
            ray.cancel(ref, force=True)
        if bar is not None:
            bar.close()


class Dispatcher:
    """Non-blocking dispatch for a caller with other work to do (the watcher): submit units, collect finished ones.

    One Ray task per unit, with the same options and task body as :func:`run_measurements`. With
    ``ray_retries=False`` Ray does not retry anything (``max_retries=0``): a lost worker or a transient failed row
    comes back at once as a transient failed row, and the caller decides when to try again (the watcher backs
    off exponentially and counts attempts in the summary rows). Every submitted unit comes back from
    :meth:`poll` exactly once, as ``(token, unit, row, seconds)``, unless it was cancelled first (:meth:`cancel`).
    """

    def __init__(self, cfg, unit_fn: UnitFn | None = None, *, address: str | None = None, ray_retries: bool = True):
        import ray

        connect(address)
        opts = task_options(cfg, ray.cluster_resources())
        if not ray_retries:
            opts.update(max_retries=0, retry_exceptions=False)
        self.options = opts
        self._remote = ray.remote(_run_unit).options(**opts)
        self._unit_fn, self._raise_transient = unit_fn, ray_retries
        self._cfg_ref = ray.put(cfg)
        self._in_flight: dict[Any, tuple[Any, MeasureUnit, float]] = {}  # ObjectRef -> (token, unit, started)
        self._by_token: dict[Any, Any] = {}

    def __len__(self) -> int:
        return len(self._in_flight)

    def tokens(self) -> list:
        return list(self._by_token)

    def submit(self, unit: MeasureUnit | dict, token: Any = None) -> Any:
        """Start ``unit`` as a Ray task; ``token`` (default: the checkpoint URI) names it in :meth:`poll`."""
        unit = MeasureUnit.of(unit)
        token = unit.checkpoint_uri if token is None else token
        if token in self._by_token:
            raise ValueError(f"unit {token!r} is already in flight")
        ref = self._remote.remote(self._unit_fn, unit, self._cfg_ref, self._raise_transient)
        self._in_flight[ref] = (token, unit, time.monotonic())
        self._by_token[token] = ref
        return token

    def poll(self, timeout: float = 0.0) -> list[tuple[Any, MeasureUnit, dict, float]]:
        """Finished units as ``(token, unit, row, seconds)``, waiting at most ``timeout`` seconds for the first."""
        import ray

        if not self._in_flight:
            return []
        refs = list(self._in_flight)
        first, _ = ray.wait(refs, num_returns=1, timeout=max(0.0, timeout))  # returns as soon as one is done
        done, _ = ray.wait(refs, num_returns=len(refs), timeout=0) if first else ([], None)  # and all ready now
        out = []
        for ref in done:
            token, unit, t0 = self._in_flight.pop(ref)
            self._by_token.pop(token, None)
            try:
                row = ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - every Ray failure becomes a failed row
                row = _row_from_error(unit, exc)
                if not self._raise_transient and row.get("error_kind") == TRANSIENT:
                    row["error"] = str(row.get("error", "")).replace(" on every attempt", "")
            out.append((token, unit, row, time.monotonic() - t0))
        return out

    def cancel(self, token: Any) -> bool:
        """Stop one unit (kills its worker if it is running); it will not come back from :meth:`poll`."""
        import ray

        ref = self._by_token.pop(token, None)
        if ref is None:
            return False
        self._in_flight.pop(ref, None)
        try:
            ray.cancel(ref, force=True)
        except Exception as exc:  # noqa: BLE001 - already finished or the cluster is gone
            log.debug("cancel of %s: %s", token, exc)
        return True

    def cancel_all(self) -> list:
        tokens = self.tokens()
        for token in tokens:
            self.cancel(token)
        return tokens
