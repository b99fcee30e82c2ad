"""The watcher: poll a source, claim each new complete checkpoint, measure it on Ray, record every outcome once.

One thread, never blocked by a measurement. Each turn of :func:`run_loop` (at most a second apart):

1. every ``interval`` seconds, **poll**: list SOURCE and ask :mod:`~llc_service.watcher.policy` what to do with each
   complete checkpoint given its recorded outcome under this measurement's identity
   (:class:`~llc_service.sinks.store.ResultKey`: run, config, checkpoint step or folder, fingerprint);
2. **dispatch**: claim candidates in RESULTS (:mod:`llc_service.watcher.claims`) and submit each as one Ray task
   (:class:`~llc_service.scheduler.ray_runner.Dispatcher`), at most ``max_concurrent`` at once;
3. **collect** finished tasks and carry out the policy's decision: finish (recording a failed row when the worker
   could not), or retry a transient failure after an exponential back-off, holding the claim;
4. **renew** the leases of held claims every quarter lease (a lost claim cancels our task), and retry releases
   that failed on storage trouble;
5. hand the (run, config) pairs with new outcomes to ``on_outcomes`` (by default the configured views' hooks:
   the wandb trajectory run), never fatally.

Exactly-once comes from the result file names (a re-measurement overwrites its own file); claims keep two
watchers from measuring the same checkpoint at the same time. Stopping (SIGINT/SIGTERM, ``stop_after``, ``stop``)
cancels the measurements in flight and releases their claims: nothing half-done is recorded.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Callable

from llc_service.config import MeasureConfig, WatchConfig
from llc_service.errors import UsageError, classify
from llc_service.watcher.claims import ClaimStore
from llc_service.watcher.watcher import Watcher
from llc_service.worker.unit import MeasureUnit

log = logging.getLogger(__name__)

OutcomeHook = Callable[[set], None]
"""Called with the set of (run_id, config_hash) pairs that got new outcomes since the last call."""


def measure_recorded(unit: MeasureUnit, cfg: MeasureConfig) -> dict:
    """What runs on the Ray worker: ``measure_unit``, plus whether its row reached Parquet (``recorded``) and the
    kind of any exception that escaped it (the results store was down when the row was written)."""
    from llc_service.worker.measure import measure_unit

    try:
        row = measure_unit(unit, cfg)
    except Exception as exc:  # noqa: BLE001 - the watcher decides what an escaped error means
        return {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "error_kind": classify(exc),
                "error_type": type(exc).__name__, "attempt": unit.attempt, "recorded": False}
    return {**dict(row), "recorded": True}


def watch(source: str, data_uri: str, results_uri: str, cfg: MeasureConfig, run_id: str | None = None,
          once: bool = False, interval: float = 60.0, address: str | None = None, use_wandb: bool = True,
          max_concurrent: int | None = None, stop_after: float | None = None, *,
          pending_timeout: float | None = 3600.0, retry_delay: float = 10.0, stop: threading.Event | None = None,
          ray_init: dict | None = None, until: Callable[[], bool] | None = None,
          on_outcomes: OutcomeHook | None = None, unit_fn: Callable | None = None) -> int:
    """Measure every complete checkpoint under ``source`` exactly once under ``cfg``; returns an exit code.

    The keyword arguments are the fields of :class:`~llc_service.config.WatchConfig` (validated like a
    ``MeasureConfig``). ``once``: measure what is there now and return once every complete checkpoint found has a
    recorded outcome. Otherwise poll every ``interval`` seconds until SIGINT/SIGTERM, ``stop_after`` seconds or
    ``stop.set()``. ``pending_timeout``: a checkpoint pending that long with unchanged files gets a failed row naming
    what is missing; it is still measured if it completes later (None: wait forever). ``retry_delay``: back-off
    before the first retry of a transient failure, doubled for each further one (``cfg.max_retries`` at most).
    Ray: ``address``, else ``RAY_ADDRESS``, else a private local cluster (``ray_init``: its ``ray.init``
    arguments); if Ray is already initialised in this process, that cluster is used. ``until``: polled while
    watching; once it returns True the watcher lists the source one last time and finishes like ``once``.
    ``on_outcomes``: called with the (run_id, config_hash) pairs that got new outcomes (default: the hooks of the
    config's views, i.e. the wandb trajectory run). ``unit_fn``: what each Ray task runs (default
    :func:`measure_recorded`; same signature).

    Returns 0 when done or stopped, 1 if an outcome could not be recorded (results store unavailable through
    every retry) or a store refuses access for good (no permission, deleted bucket: the watcher stops instead of
    looping), 2 for usage errors (missing source or data, bad arguments).
    """
    from llc_service.console import usage_error

    settings = WatchConfig(run_id=run_id, once=once, interval=interval, address=address, use_wandb=use_wandb,
                           max_concurrent=max_concurrent, stop_after=stop_after, pending_timeout=pending_timeout,
                           retry_delay=retry_delay)
    try:
        data_fp = check_request(source, data_uri, results_uri, cfg, settings)
    except UsageError as exc:
        return usage_error("watch", str(exc))
    if on_outcomes is None:
        from llc_service.sinks.base import on_outcomes as view_hooks

        def on_outcomes(dirty: set) -> None:
            view_hooks(cfg, str(results_uri), dirty, use_wandb=settings.use_wandb)
    return run(source, data_uri, results_uri, cfg, settings, stop=stop, ray_init=ray_init, until=until,
               on_outcomes=on_outcomes, unit_fn=unit_fn or measure_recorded, data_fp=data_fp)


def check_request(source: str, data_uri: str, results_uri: str, cfg: MeasureConfig, settings: WatchConfig) -> str:
    """Raise :class:`UsageError` for anything that would make the watch pointless: bad settings or config, an
    unknown source protocol, a source or data that does not exist, an unreachable results store. Returns DATA's
    fingerprint (part of every result's identity)."""
    from llc_service.bucket import get_source
    from llc_service.storage import check_location

    settings.validate()
    try:
        cfg.validate()
        get_source(source, storage_options=cfg.storage_options, marker_file=cfg.marker_file)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    for what, uri, must, may_appear in (("source", source, True, True), ("data", data_uri, True, False),
                                        ("results", results_uri, False, True)):
        problem = check_location(what, str(uri), cfg.storage_options, must, may_appear)
        if problem:
            raise UsageError(problem)
    from llc_service.data import DataError, data_fingerprint

    try:  # DATA with nothing to read (no .parquet/.jsonl, mixed formats) is refused now, not once per checkpoint
        return data_fingerprint(data_uri, cfg)
    except DataError as exc:
        raise UsageError(str(exc)) from exc


def run(source: str, data_uri: str, results_uri: str, cfg: MeasureConfig, settings: WatchConfig, *,
        stop: threading.Event | None = None, ray_init: dict | None = None, until: Callable[[], bool] | None = None,
        on_outcomes: OutcomeHook = lambda dirty: None, unit_fn: Callable | None = None,
        data_fp: str | None = None) -> int:
    """Watch with checked settings (see :func:`watch`): set up Ray, signals and claims, then run the loop.
    ``data_fp``: DATA's fingerprint when already taken (else the watcher takes it at its first listing)."""
    import ray

    from llc_service.scheduler.ray_runner import Dispatcher, connect

    started_ray = not ray.is_initialized()
    stop_event = stop or threading.Event()

    def make_dispatcher():
        connect(settings.address or os.environ.get("RAY_ADDRESS") or "local", **(ray_init or {}))
        _install_signal_handlers(stop_event)  # ray.init installs its own SIGTERM handler (exit 15): ours again
        return Dispatcher(cfg, unit_fn or measure_recorded, ray_retries=False)

    restore = _install_signal_handlers(stop_event)
    try:
        claims = ClaimStore(results_uri, cfg.storage_options, lease_seconds=cfg.lease_seconds)
        watcher = Watcher(source, data_uri, results_uri, cfg, settings, make_dispatcher=make_dispatcher,
                          claims=claims)
        watcher.data_fp = data_fp
        cap = settings.max_concurrent
        log.info("watching %s (config %s, %s) -> %s as %s; lease %gs, %s", source, watcher.config_hash,
                 "once" if settings.once else f"every {settings.interval:g}s", results_uri, claims.owner,
                 cfg.lease_seconds, f"at most {cap} at once" if cap else "no concurrency cap")
        return run_loop(watcher, stop_event, cfg.lease_seconds, until, on_outcomes)
    finally:
        _restore_signal_handlers(restore)
        if started_ray and ray.is_initialized():
            ray.shutdown()


def run_loop(w: Watcher, stop_event: threading.Event, lease_seconds: float,
             until: Callable[[], bool] | None = None, on_outcomes: OutcomeHook = lambda dirty: None) -> int:
    """Carry out the watcher's steps until done or stopped; returns the exit code."""
    settings = w.settings
    interval, stop_after = settings.interval, settings.stop_after
    t0 = time.monotonic()
    next_poll = t0
    renew_every = max(0.2, lease_seconds / 4)
    next_renew = t0 + renew_every
    hook_gap, last_hook = min(10.0, interval), 0.0
    reason = "done"

    def flush_outcomes() -> None:
        nonlocal last_hook
        dirty, w.dirty = w.dirty, set()
        last_hook = time.monotonic()
        if dirty:
            try:
                on_outcomes(dirty)
            except Exception as exc:  # noqa: BLE001 - a view must never cost a result
                log.warning("updating views of new outcomes failed (%s: %s)", type(exc).__name__, exc)

    try:
        while True:
            now = time.monotonic()
            if stop_event.is_set():
                reason = "stop requested"
                break
            if stop_after is not None and now - t0 >= stop_after:
                reason = f"--stop-after {stop_after:g}s"
                break
            if w.refused:
                reason = "refused"
                log.error("stopping: %s", w.refused)
                break
            if until is not None and not w.once and _true(until):
                log.info("producer finished: measuring what is there, then stopping")
                w.finish_after_this_listing()
                next_poll = now
            if now >= next_poll:
                w.poll()
                next_poll = time.monotonic() + interval
            w.dispatch()
            if now >= next_renew:
                w.renew()
                w.retry_releases()
                next_renew = time.monotonic() + renew_every
            if w.dirty and time.monotonic() - last_hook >= hook_gap:
                flush_outcomes()
            if w.once and w.once_done():
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
        flush_outcomes()
    log.info("watcher stopped (%s): %s", reason, w.summary())
    return 1 if w.unrecorded or w.refused else 0


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
