"""run_report end to end through the real Parquet sink and read_summary."""

from __future__ import annotations

import numpy as np

from llc_service.report import run_report
from llc_service.sinks import MeasurementRecord, ParquetSink


def write_trajectory(root, run_id, steps, llc):
    sink = ParquetSink(str(root))
    for i, (s, v) in enumerate(zip(steps, llc)):
        sketch = np.zeros(1024, dtype=np.float32)
        sketch[0] = 3 * i
        sink.write(MeasurementRecord({
            "run_id": run_id, "checkpoint_step": int(s), "checkpoint_uri": f"/ckpt/{run_id}/step{s}",
            "checkpoint_fingerprint": f"fp{s}", "config_hash": "cfg000000001", "status": "ok", "attempt": 1,
            "llc_mean": float(v), "llc_std": 0.1, "init_loss": 4.0 - i * 0.05, "num_chains_used": 4,
            "nbeta": 30.0, "weight_norm": 10.0 + i, "weight_sketch": sketch}, None, None))
    sink.close()


def test_report_text_plot_and_boundaries(tmp_path, capsys):
    steps = np.unique(np.round(np.logspace(1, 4, 25)).astype(int))
    llc = 10 + 5 * np.exp(-0.5 * ((np.log10(steps) - 2.5) / 0.25) ** 2)  # peak at ~316
    write_trajectory(tmp_path / "results", "run-a", steps, llc)
    write_trajectory(tmp_path / "results", "run-b", steps, llc[::-1])
    plot = tmp_path / "traj.png"
    text = run_report(str(tmp_path / "results"), run_id="run-a", plot=str(plot))
    assert capsys.readouterr().out.strip() == text.strip()
    assert "run run-a  config cfg000000001  nβ=30" in text and "run-b" not in text
    boundary_line = next(line for line in text.splitlines() if line.startswith("stage boundaries"))
    (found,) = [int(s) for s in boundary_line.rsplit(":", 1)[1].split(",")]
    assert 200 <= found <= 500, boundary_line
    assert f"{found}*" in text
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_on_empty_results(tmp_path):
    assert run_report(str(tmp_path / "nothing"), echo=False) == "no measurements found"
    assert "no measurements of run 'x'" in run_report(str(tmp_path / "nothing"), run_id="x", echo=False)
