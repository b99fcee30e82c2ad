"""Helpers for watcher tests: a tiny measurement config, a private local Ray cluster, a restartable moto server,
a log recorder to wait on, the ``llc-service`` CLI as a subprocess, and process-tree cleanup by PID.

Everything a helper starts it stops itself, by its own handle or PID (never ``ray stop``, never by name).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from tests.helpers.checkpoints import DUMMY_CREDENTIALS, free_port
from tests.helpers.measure import set_args, small_config, write_token_parquet

# ~1-2 s per measurement on one warm CPU worker; λ̂ is a real (if noisy) number
TINY = dict(num_chains=2, num_draws=20, num_burnin=0, batch_size=8, seq_len=32, init_loss_batches=4,
            epsilon=1e-4, nbeta=10.0, gamma=100.0, seed=0, progress=False, device="cpu", wandb_project=None,
            cpus_per_measurement=1, max_retries=2)

RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled",
           "RAY_DEDUP_LOGS": "0"}


def tiny_config(**overrides):
    return small_config(**{**TINY, **overrides})


def tiny_sets(**overrides) -> list[str]:
    """``--set k=v`` arguments equivalent to :func:`tiny_config`."""
    return set_args(**{**TINY, **overrides})


write_tokens = write_token_parquet


@contextlib.contextmanager
def env(**values):
    """Set environment variables for the block (``None`` removes one), restoring them afterwards."""
    saved = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = str(v)
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def local_ray(num_cpus: int = 2, wandb_dir: str | None = None):
    """A private single-node Ray cluster for this process (temp dir of its own, loopback, no auth, no dashboard).

    Ray workers inherit the environment the cluster started with, so ``wandb_dir`` (``WANDB_DIR``) is set first.
    """
    import ray

    tmp = tempfile.mkdtemp(prefix="llcw", dir="/tmp")  # short: Unix socket paths are limited to ~107 bytes
    extra = {"WANDB_DIR": wandb_dir} if wandb_dir else {}
    with env(**RAY_ENV, RAY_TMPDIR=tmp, **extra):
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False)
        try:
            yield
        finally:
            ray.shutdown()
            shutil.rmtree(tmp, ignore_errors=True)


def unit_worker_processes(root_pid: int | None = None):
    """Ray worker processes under ``root_pid`` (default: this process) that are running a measurement unit.

    Ray renames a worker's process to ``ray::<task name>`` while it runs a task (``ray::IDLE`` otherwise).
    """
    import psutil

    out = []
    for p in psutil.Process(root_pid or os.getpid()).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            cmd = p.cmdline()
            if cmd and cmd[0].startswith("ray::_run_unit"):
                out.append(p)
    return out


def kill_processes(procs) -> None:
    """SIGKILL each ``psutil.Process`` still alive (psutil checks the PID was not reused)."""
    import psutil

    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(list(procs), timeout=10)


def wait_until(predicate, timeout: float, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


class LogRecorder(logging.Handler):
    """Collects the package's log messages (the watcher's and what it calls) so a test can wait for one."""

    def __init__(self, logger: str = "llc_service"):
        super().__init__(level=logging.DEBUG)
        self.messages: list[str] = []
        self._lock_ = threading.Lock()
        self._logger = logging.getLogger(logger)

    def emit(self, record):
        with self._lock_:
            self.messages.append(record.getMessage())

    def __enter__(self):
        self._logger.addHandler(self)
        self._old_level = self._logger.level
        self._logger.setLevel(logging.DEBUG)
        return self

    def __exit__(self, *exc):
        self._logger.removeHandler(self)
        self._logger.setLevel(self._old_level)

    def has(self, text: str) -> bool:
        with self._lock_:
            return any(text in m for m in self.messages)

    def has_line(self, *parts: str) -> bool:
        """A message containing every one of ``parts`` (e.g. a result line: its label and its status)."""
        with self._lock_:
            return any(all(p in m for p in parts) for m in self.messages)

    def wait_for(self, text: str, timeout: float) -> None:
        wait_until(lambda: self.has(text), timeout, what=f"log message containing {text!r}")

    def wait_for_line(self, *parts: str, timeout: float) -> None:
        wait_until(lambda: self.has_line(*parts), timeout, what=f"log message containing {parts!r}")

    def text(self) -> str:
        with self._lock_:
            return "\n".join(self.messages)


class WatchThread:
    """``watch(...)`` in a background thread, stopped with its ``stop`` event; keeps the return code."""

    def __init__(self, *args, **kwargs):
        from llc_service.watcher.watch import watch

        self.stop_event = threading.Event()
        self.code: int | None = None
        self.error: BaseException | None = None

        def run():
            try:
                self.code = watch(*args, stop=self.stop_event, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - reported by join()
                self.error = exc

        self.thread = threading.Thread(target=run, name="watcher", daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def join(self, timeout: float = 60.0) -> int:
        self.stop_event.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "watcher did not stop"
        if self.error is not None:
            raise self.error
        return self.code

    def __exit__(self, *exc):
        if self.thread.is_alive():
            self.stop_event.set()
            self.thread.join(60)


class RestartableMoto:
    """A moto S3 server on a fixed free port that can be stopped and started again (moto keeps its objects in
    this process, so they survive a restart): a results store that goes away for a moment."""

    def __init__(self, buckets=()):
        os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self.port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self.storage_options = {**DUMMY_CREDENTIALS, "client_kwargs": {"endpoint_url": self.endpoint_url}}
        self.server = None
        self.buckets = buckets

    def start(self):
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        return self

    def stop(self):
        if self.server is not None:
            self.server.stop()
            self.server = None

    def __enter__(self):
        self.start()
        from llc_service.bucket import open_fs

        fs, _ = open_fs("s3://", self.storage_options)
        for bucket in self.buckets:
            if not fs.exists(bucket):
                fs.mkdir(bucket)
        return self

    def __exit__(self, *exc):
        self.stop()


def cli_path() -> str:
    exe = Path(sys.executable).with_name("llc-service")
    return str(exe) if exe.exists() else shutil.which("llc-service") or "llc-service"


def cli_env(tmp: Path) -> dict:
    """Environment for an ``llc-service`` subprocess: offline hub and wandb, loopback Ray in a private temp dir."""
    ray_tmp = tempfile.mkdtemp(prefix="llcc", dir="/tmp")
    e = dict(os.environ)
    e.update(RAY_ENV, RAY_TMPDIR=ray_tmp, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
             WANDB_MODE="offline", WANDB_DIR=str(tmp), TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    e.pop("RAY_ADDRESS", None)
    return e


def start_cli(args: list[str], tmp: Path, log_name: str = "watch.log") -> tuple[subprocess.Popen, Path, dict]:
    """``llc-service ARGS`` in the background, output to ``tmp/log_name``; returns (process, log file, env)."""
    e = cli_env(tmp)
    log_file = tmp / log_name
    out = open(log_file, "w")
    proc = subprocess.Popen([cli_path(), *args], env=e, stdout=out, stderr=subprocess.STDOUT, cwd=str(tmp))
    out.close()
    return proc, log_file, e


def stop_tree(proc: subprocess.Popen, snapshot=()) -> None:
    """Kill ``proc`` if it still runs and every process of its tree, by PID (``snapshot``: the tree taken earlier,
    e.g. before a SIGKILL orphaned it)."""
    import psutil

    procs = list(snapshot)
    with contextlib.suppress(psutil.Error):
        procs += psutil.Process(proc.pid).children(recursive=True)
    if proc.poll() is None:
        proc.kill()
        proc.wait(30)
    kill_processes(procs)


def rows_by_step(results_uri: str, storage_options=None):
    """{step: [summary rows as dicts]} of everything under ``results_uri``."""
    import pandas as pd

    from llc_service.sinks import read_summary

    df = read_summary(results_uri, storage_options=storage_options)
    out: dict = {}
    for rec in df.to_dict("records"):
        step = None if pd.isna(rec["checkpoint_step"]) else int(rec["checkpoint_step"])
        out.setdefault(step, []).append(rec)
    return out
