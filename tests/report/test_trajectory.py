"""trajectory_table: grouping, ordering, duplicates, failures, distances; format_table text."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from llc_service.report.trajectory import TABLE_COLUMNS, format_table, trajectory_table
from tests.report.summaries import curve_frame, summary_frame


def test_sorted_per_run_and_config_with_distances():
    a = curve_frame([1000, 10, 100], [3.0, 1.0, 2.0], run_id="run-a")
    b = curve_frame([5, 50], [7.0, 8.0], run_id="run-b", config_hash="cfg2")
    t = trajectory_table(pd.concat([b, a], ignore_index=True))
    assert list(t.columns) == list(TABLE_COLUMNS)
    assert list(zip(t.run_id, t.step)) == [("run-a", 10), ("run-a", 100), ("run-a", 1000), ("run-b", 5), ("run-b", 50)]
    assert list(t.llc_mean) == [1.0, 2.0, 3.0, 7.0, 8.0]
    # curve_frame puts sketch i at i·e0 in *input* order: steps 1000→0, 10→1, 100→2; first ok step is 10 (sketch 1)
    assert list(t.dist_from_first[:3]) == pytest.approx([0.0, 1.0, 1.0])
    assert list(t.dist_from_first[3:]) == pytest.approx([0.0, 1.0])
    only_b = trajectory_table(pd.concat([a, b]), run_id="run-b")
    assert set(only_b.run_id) == {"run-b"} and len(only_b) == 2


def test_failed_rows_kept_and_first_ok_is_the_reference():
    sk = lambda x: np.array([x, 0.0], dtype=np.float32)  # noqa: E731
    df = summary_frame([
        {"run_id": "r", "config_hash": "c", "checkpoint_step": 0, "status": "failed", "llc_mean": None,
         "llc_std": None, "init_loss": None, "weight_sketch": None},
        {"run_id": "r", "config_hash": "c", "checkpoint_step": 10, "llc_mean": 4.0, "weight_sketch": sk(3.0)},
        {"run_id": "r", "config_hash": "c", "checkpoint_step": 20, "llc_mean": 5.0, "weight_sketch": sk(7.0)},
        {"run_id": "r", "config_hash": "c", "checkpoint_step": None, "llc_mean": 9.0, "weight_sketch": sk(1.0)},
    ])
    t = trajectory_table(df)
    assert list(t.step) == [0, 10, 20], "a row without a step is left out"
    assert list(t.status) == ["failed", "ok", "ok"]
    assert math.isnan(t.llc_mean[0]) and math.isnan(t.dist_from_first[0])
    assert list(t.dist_from_first[1:]) == pytest.approx([0.0, 4.0])


def test_remeasured_step_keeps_the_best_row():
    t0 = pd.Timestamp("2026-01-01", tz="UTC")
    df = summary_frame([
        {"run_id": "r", "config_hash": "c", "checkpoint_step": 10, "llc_mean": 1.0, "ended_at": t0},
        {"run_id": "r", "config_hash": "c", "checkpoint_step": 10, "llc_mean": 2.0,
         "ended_at": t0 + pd.Timedelta(hours=1)},
        {"run_id": "r", "config_hash": "c", "checkpoint_step": 10, "llc_mean": None, "status": "failed",
         "ended_at": t0 + pd.Timedelta(hours=2)},
    ])
    t = trajectory_table(df)
    assert len(t) == 1 and t.llc_mean[0] == 2.0 and t.status[0] == "ok"


def test_empty_summary_gives_empty_table_and_message():
    t = trajectory_table(summary_frame([{"run_id": "r", "config_hash": "c", "checkpoint_step": 1,
                                         "llc_mean": 1.0}]).iloc[0:0])
    assert len(t) == 0 and list(t.columns) == list(TABLE_COLUMNS)
    assert format_table(t) == "no measurements found"


def test_format_table_text():
    t = trajectory_table(curve_frame([10, 100, 1000], [1.5, 2.25, 1.0]))
    text = format_table(t, boundaries={("run-a", "cfg000000001"): [100]})
    lines = text.splitlines()
    assert lines[0] == "run run-a  config cfg000000001  nβ=30"
    assert "llc_mean" in lines[1] and "init_loss" in lines[1]
    assert lines[3].split()[:3] == ["100*", "ok", "2.25"], lines[3]
    assert lines[2].split()[:2] == ["10", "ok"]
    assert lines[-1].endswith(": 100")


def test_failing_diagnostics_are_marked():
    """R̂ > 1.1 (chains disagree) or low MALA acceptance marks the row with '!'; a healthy row is not marked."""
    df = curve_frame([10, 100, 1000], [1.5, 2.25, 1.0])
    df["rhat"] = [1.002, 1.5, 1.01]
    df["ess_bulk"] = [800.0, 900.0, 700.0]
    df["mala_acceptance"] = [0.95, 0.93, 0.2]
    t = trajectory_table(df)
    assert list(t["diag_fail"]) == [False, True, True]
    lines = format_table(t).splitlines()
    assert lines[2].split()[:2] == ["10", "ok"]
    assert lines[3].split()[:3] == ["100", "!", "ok"] and lines[4].split()[:3] == ["1000", "!", "ok"]
    assert lines[-1].startswith("! chain diagnostics fail")
    old = trajectory_table(curve_frame([10, 100], [1.0, 2.0]))  # version-1 rows: nothing measured, nothing marked
    assert not old["diag_fail"].any()
