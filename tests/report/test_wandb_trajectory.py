"""wandb trajectory run, offline: deterministic id, job type, group, history against checkpoint_step."""

from __future__ import annotations

import logging

import pandas as pd
import pytest

from llc_service.report.trajectory import trajectory_table
from llc_service.report.wandb_trajectory import log_trajectory, trajectory_rows, trajectory_run_id
from tests.report.summaries import curve_frame, summary_frame
from tests.sinks.wandb_records import read_run


@pytest.fixture
def wandb_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    yield tmp_path
    import wandb

    wandb.teardown()  # wandb caches settings per process


def test_run_id_is_deterministic_and_distinct():
    a = trajectory_run_id("run-a", "cfg1")
    assert a == trajectory_run_id("run-a", "cfg1") and len(a) == 16 and a.isalnum()
    assert len({a, trajectory_run_id("run-a", "cfg2"), trajectory_run_id("run-b", "cfg1")}) == 3


def test_rows_in_step_order_without_nan():
    failed = summary_frame([{"run_id": "run-a", "config_hash": "cfg000000001", "checkpoint_step": 5,
                             "status": "failed", "llc_mean": None, "llc_std": None, "init_loss": None}])
    table = trajectory_table(pd.concat([curve_frame([100, 10], [2.0, 1.0]), failed], ignore_index=True))
    rows = trajectory_rows(table)
    assert [r["checkpoint_step"] for r in rows] == [5, 10, 100]
    assert "llc_mean" not in rows[0] and rows[0]["ok"] == 0
    assert rows[1]["llc_lo"] == 0.5 and rows[1]["llc_hi"] == 1.5 and rows[1]["ok"] == 1


def test_offline_run_with_history(wandb_dir):
    steps = [10, 100, 1000]
    table = trajectory_table(pd.concat([curve_frame(steps, [1.0, 3.0, 2.0]),
                                        curve_frame(steps, [5.0, 6.0, 7.0], run_id="run-b")], ignore_index=True))
    ids = log_trajectory(table, "llc-test", run_id="run-a")
    wid = trajectory_run_id("run-a", "cfg000000001")
    assert ids == [wid]
    (path,) = sorted((wandb_dir / "wandb").glob(f"offline-run-*-{wid}/run-{wid}.wandb"))
    assert path.stat().st_size > 0
    run = read_run(path)
    assert run["run"].run_id == wid and run["run"].job_type == "trajectory" and run["run"].run_group == "run-a"
    history = [h for h in run["history"] if "checkpoint_step" in h]
    assert [h["checkpoint_step"] for h in history] == steps
    assert [h["llc_mean"] for h in history] == [1.0, 3.0, 2.0]
    assert history[1]["llc_hi"] == 3.5 and history[2]["dist_from_first"] == pytest.approx(2.0)
    assert run["config"]["config_hash"] == "cfg000000001" and run["config"]["nbeta"] == 30.0
    assert not list((wandb_dir / "wandb").glob(f"offline-run-*-{trajectory_run_id('run-b', 'cfg000000001')}"))


def test_never_raises(wandb_dir, monkeypatch, caplog):
    import wandb

    def boom(*a, **k):
        raise RuntimeError("wandb is down")

    monkeypatch.setattr(wandb, "init", boom)
    table = trajectory_table(curve_frame([10, 100], [1.0, 2.0]))
    with caplog.at_level(logging.WARNING):
        assert log_trajectory(table, "llc-test") == []
    assert "wandb is down" in caplog.text
    assert log_trajectory(None, "llc-test") == []  # not even on garbage input
