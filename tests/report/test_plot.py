"""plot_trajectory writes a real PNG: with step 0 (symlog), failures, several trajectories, boundaries."""

from __future__ import annotations

import numpy as np
import pandas as pd

from llc_service.report.plot import plot_trajectory
from llc_service.report.trajectory import trajectory_table
from tests.report.summaries import curve_frame, summary_frame

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    data = path.read_bytes()
    assert len(data) > 1000 and data[:8] == PNG_MAGIC
    import matplotlib.image as mpimg

    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert img[..., :3].std() > 0.01, "not a blank canvas"


def test_plot_two_trajectories_with_step_zero_and_a_failure(tmp_path):
    steps = np.unique(np.round(np.logspace(0, 4, 20)).astype(int))
    llc = 10 + 5 * np.exp(-0.5 * ((np.log10(steps) - 2) / 0.3) ** 2)
    a = curve_frame(np.concatenate([[0], steps]), np.concatenate([[0.5], llc]))
    b = curve_frame(steps, llc * 0.8, run_id="run-b")
    failed = summary_frame([{"run_id": "run-b", "config_hash": "cfg000000001", "checkpoint_step": 20_000,
                             "status": "failed", "llc_mean": None, "llc_std": None, "init_loss": None}])
    table = trajectory_table(pd.concat([a, b, failed], ignore_index=True))
    out = tmp_path / "sub" / "traj.png"
    assert plot_trajectory(table, str(out)) == str(out)
    assert_png(out)


def test_plot_log_axis_and_given_boundaries(tmp_path):
    table = trajectory_table(curve_frame([10, 100, 1000, 10_000], [1.0, 3.0, 2.0, 2.5]))
    out = tmp_path / "t.png"
    plot_trajectory(table, str(out), boundaries={("run-a", "cfg000000001"): [100, 1000]})
    assert_png(out)


def test_plot_of_empty_table_still_writes_a_file(tmp_path):
    table = trajectory_table(curve_frame([10], [1.0]).iloc[0:0])
    out = tmp_path / "empty.png"
    plot_trajectory(table, str(out), boundaries=False)
    assert out.read_bytes()[:8] == PNG_MAGIC
