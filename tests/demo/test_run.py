"""The main job (scripts/demo.sh → llc_service.demo.run), shrunk: training writes checkpoints while the watcher
measures them on a local Ray; every checkpoint ends with exactly one ok row, the report and plot are produced."""

from __future__ import annotations

import os
import subprocess
import sys

from llc_service import read_summary
from llc_service.demo.train import log_spaced_steps


def test_demo_trains_watches_and_reports(tmp_path):
    out = tmp_path / "demo"
    small = ["--set", "num_chains=2", "--set", "num_draws=15", "--set", "num_burnin=5", "--set", "batch_size=8",
             "--set", "init_loss_batches=4"]
    proc = subprocess.run([sys.executable, "-m", "llc_service.demo.run", "--out", str(out), "--steps", "30",
                           "--per-decade", "2", "--interval", "1", *small],
                          capture_output=True, text=True, timeout=600,
                          env={**{k: v for k, v in os.environ.items() if k != "WANDB_DIR"}, "WANDB_MODE": "offline"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    written = sorted(int(p.name[4:]) for p in (out / "bucket" / "tiny-neox").iterdir())
    assert written == log_spaced_steps(30, 2)
    s = read_summary(str(out / "results"))
    assert sorted(s.checkpoint_step.tolist()) == written  # each checkpoint once
    assert set(s.status) == {"ok"}
    assert "checkpoint_step" in proc.stdout or "step" in proc.stdout  # the trajectory table
    assert (out / "llc-trajectory.png").stat().st_size > 1000
    assert list((out / "wandb").rglob("run-*.wandb")), "no offline wandb runs"
    assert "wandb sync" in proc.stdout
