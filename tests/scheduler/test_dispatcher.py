"""Dispatcher: non-blocking submit/poll/cancel on the two-node cluster, with Ray's own retries switched off."""

from __future__ import annotations

import time
from pathlib import Path

from llc_service.config import MeasureConfig
from llc_service.scheduler.ray_runner import Dispatcher
from tests.scheduler import fake_units


def _cfg() -> MeasureConfig:
    return MeasureConfig(device="cpu", cpus_per_measurement=1, max_retries=2, progress=False)


def _unit(tmp_path: Path, name: str, **extra) -> dict:
    return {"checkpoint": str(tmp_path / "ckpts" / name), "data_uri": "unused", "results_uri": str(tmp_path),
            **extra}


def _attempts(tmp_path: Path, name: str) -> int:
    path = tmp_path / f"{name}.attempts"
    return len(path.read_text().splitlines()) if path.exists() else 0


def _drain(d: Dispatcher, timeout: float = 120.0) -> dict:
    out, deadline = {}, time.monotonic() + timeout
    while len(d) and time.monotonic() < deadline:
        for token, _unit, row, _secs in d.poll(timeout=1.0):
            out[token] = row
    assert not len(d), "units did not finish"
    return out


def test_poll_does_not_block_and_returns_each_unit_once(ray_two_nodes, tmp_path):
    d = Dispatcher(_cfg(), fake_units.sleepy_unit)
    d.submit(_unit(tmp_path, "a", sleep=2.0), token="a")
    d.submit(_unit(tmp_path, "b", sleep=2.0), token="b")
    t0 = time.monotonic()
    assert d.poll(timeout=0) == [] and time.monotonic() - t0 < 1.0  # running: nothing yet, and no waiting
    assert sorted(d.tokens()) == ["a", "b"] and len(d) == 2
    rows = _drain(d)
    assert sorted(rows) == ["a", "b"] and all(r["status"] == "ok" for r in rows.values())
    assert d.poll(timeout=0) == []


def test_without_ray_retries_a_lost_worker_comes_back_as_a_transient_row(ray_two_nodes, tmp_path):
    d = Dispatcher(_cfg(), fake_units.dies_once_unit, ray_retries=False)
    d.submit(_unit(tmp_path, "c"), token="c")
    row = _drain(d)["c"]
    assert row["status"] == "failed" and row["error_kind"] == "transient"
    assert "WorkerCrashedError" in row["error"] and "every attempt" not in row["error"]
    assert _attempts(tmp_path, "c") == 1  # the caller decides when to try again


def test_without_ray_retries_a_transient_row_is_returned_as_it_is(ray_two_nodes, tmp_path):
    d = Dispatcher(_cfg(), fake_units.transient_once_unit, ray_retries=False)
    d.submit(_unit(tmp_path, "d"), token="d")
    row = _drain(d)["d"]
    assert row["status"] == "failed" and row["error_kind"] == "transient" and "SlowDown" in row["error"]
    assert _attempts(tmp_path, "d") == 1


def test_cancel_stops_a_running_unit_and_it_never_comes_back(ray_two_nodes, tmp_path):
    d = Dispatcher(_cfg(), fake_units.sleepy_unit)
    d.submit(_unit(tmp_path, "e", sleep=60.0), token="e")
    deadline = time.monotonic() + 60
    while not _attempts(tmp_path, "e") and time.monotonic() < deadline:  # wait until it runs
        time.sleep(0.1)
    assert d.cancel("e") and not d.cancel("e")
    assert len(d) == 0 and d.poll(timeout=1.0) == []
    assert not (tmp_path / "e.json").exists()


def storage_down_unit(unit, cfg):
    """A unit whose result cannot even be written: the store refuses connections (like botocore's
    EndpointConnectionError, which is not a builtin ConnectionError)."""
    fake_units._attempt(unit.results_uri, unit.checkpoint)

    class EndpointConnectionError(Exception):
        pass

    raise EndpointConnectionError('Could not connect to the endpoint URL: "http://127.0.0.1:9/bucket/key"')


def test_a_storage_error_escaping_the_unit_is_transient_and_retried_by_run_measurements(ray_two_nodes, tmp_path):
    from llc_service.errors import classify
    from llc_service.scheduler.ray_runner import run_measurements

    assert classify(ConnectionRefusedError()) == "transient"
    assert classify(ValueError("bad config")) == "permanent"
    cfg = _cfg()
    cfg.max_retries = 1
    [(_, row)] = list(run_measurements([_unit(tmp_path, "f")], cfg, storage_down_unit))
    assert row["status"] == "failed" and row["error_kind"] == "transient"
    assert "EndpointConnectionError" in row["error"] and "gave up after retries" in row["error"]
    assert _attempts(tmp_path, "f") == 2  # retried by Ray, unlike an application error
