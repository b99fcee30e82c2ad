"""Refined LLC over a run, end to end: the watcher measures component trajectories and ``report`` draws them.

Real parts only: two ``save_pretrained`` GPT-NeoX checkpoints (hidden 32, 2 layers, 2 heads of 16), real token
data, the real watcher on a private local Ray cluster, Parquet read back with the package's reader, the
``llc-service report`` command (in-process ``main``) writing its text and figure, wandb offline run files on disk.
"""

from __future__ import annotations

import math

import pytest

from llc_service.cli import main
from llc_service.report.components import components_run_id
from llc_service.sinks import read_summary
from llc_service.watcher.claims import ClaimStore
from llc_service.watcher.watch import watch
from tests.helpers.checkpoints import make_checkpoint
from tests.helpers.watch import LogRecorder, local_ray, tiny_config, write_tokens

STEPS = (100, 300)
HIDDEN, HEAD = 32, 16  # the fixture model: hidden 32, 2 heads of 16
# a head owns its 3 × 16 rows of the fused QKV weight (each row: 32 weights + 1 bias) and 16 columns of ``dense``
HEAD_PARAMS = 3 * HEAD * (HIDDEN + 1) + HEAD * HIDDEN
COMPONENTS = [{"name": "l0.h0", "param_filter": r"layers\.0\.attention\.", "heads": [0]},
              {"name": "l1.h1", "param_filter": r"layers\.1\.attention\.", "heads": [1]},
              "all"]
NAMES = ["l0.h0", "l1.h1", "all"]


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    wandb_dir = tmp_path_factory.mktemp("wandb")
    with local_ray(num_cpus=2, wandb_dir=str(wandb_dir)):
        yield wandb_dir


def _files(root):
    return {p: p.stat().st_mtime_ns for p in root.rglob("*.parquet")}


def test_watcher_measures_component_trajectories_once_and_report_draws_them(ray_cluster, tmp_path, capsys):
    bucket = tmp_path / "bucket"
    for seed, step in enumerate(STEPS):
        make_checkpoint(bucket / "run1" / f"step{step}", seed=seed)
    tokens = write_tokens(tmp_path / "tokens.parquet")
    out = str(tmp_path / "results")
    cfg = tiny_config(components=COMPONENTS, num_chains=2, num_draws=12, wandb_project="llc-comp-watch")

    with LogRecorder() as logs:
        assert watch(str(bucket), tokens, out, cfg, once=True, interval=0.5) == 0
    for step in STEPS:  # one progress line per component of each checkpoint
        for name in NAMES:
            assert logs.has_line(f"run1 step {step} [{name}]:  λ̂ = ", "[ok]"), logs.text()[-3000:]

    s = read_summary(out)
    assert len(s) == len(STEPS) * len(NAMES), s[["checkpoint_step", "component", "status"]]
    assert set(s.status) == {"ok"}, s[["checkpoint_step", "component", "status", "error"]]
    for step in STEPS:
        at = s[s.checkpoint_step == step]
        assert list(at.component) == NAMES  # measured in config order, one row each
        assert at.init_loss.nunique() == 1 and at.checkpoint_fingerprint.nunique() == 1  # one load, one L(w*)
        assert all(math.isfinite(v) for v in at.llc_mean)
    assert set(s[s.component != "all"].component_params) == {HEAD_PARAMS}
    whole = s[s.component == "all"]
    assert (whole.component_params == whole.num_params).all() and (whole.num_params > 10 * HEAD_PARAMS).all()
    assert s.config_hash.nunique() == 1 and s.config_hash.iloc[0] == cfg.config_hash()
    # different checkpoints (seeds) give different λ̂: each row measured its own checkpoint
    assert s[s.component == "l0.h0"].llc_mean.nunique() == len(STEPS)
    claims = ClaimStore(out).list_claims()
    assert len(claims) == len(STEPS) and all(c.released_at is not None for c in claims)
    # the watcher's wandb hook logged the per-component series (one offline run under its deterministic id)
    comp_run = components_run_id("run1", cfg.config_hash())
    assert list(ray_cluster.rglob(f"run-{comp_run}.wandb")), "no wandb component trajectory run written"

    # a restarted watcher measures nothing and rewrites nothing
    files = _files(tmp_path / "results")
    assert len(files) == 2 * len(STEPS)  # one summary file and one draws file per checkpoint
    with LogRecorder() as logs:
        assert watch(str(bucket), tokens, out, cfg, once=True, interval=0.5, use_wandb=False) == 0
    assert logs.has(f"{len(STEPS)} already measured") and not logs.has("dispatched"), logs.text()
    assert _files(tmp_path / "results") == files
    assert len(read_summary(out)) == len(STEPS) * len(NAMES)

    # llc-service report: the component × step matrix in the terminal and the small multiples figure
    plot = tmp_path / "report" / "trajectory.png"
    assert main(["report", out, "--plot", str(plot)]) == 0
    text = capsys.readouterr().out
    assert "components of run1" in text
    matrix = text[text.index("components of run1"):].splitlines()
    assert matrix[1].split() == [str(step) for step in STEPS]
    for name in ("l0.h0", "l1.h1"):
        row = next(line for line in matrix if line.startswith(name)).split()
        expected = s[s.component == name].sort_values("checkpoint_step").llc_mean
        assert [float(v) for v in row[1:]] == pytest.approx(list(expected), rel=1e-3)
    assert not any(line.startswith("all ") for line in matrix)  # the whole model is the main trajectory
    figure = tmp_path / "report" / "trajectory-components.png"
    assert f"component plot written to {figure}" in text
    png = figure.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    # small multiples, one panel per component: 2 columns of 3.2 × 2.6 inches at 110 dpi (a heat map is wider)
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (round(2 * 3.2 * 110), round(2.6 * 110)), (width, height)
    assert plot.exists() and f"plot written to {plot}" in text  # the whole-model trajectory ("all")
    for step in STEPS:  # ... whose rows are the "all" components
        value = f"{float(whole[whole.checkpoint_step == step].llc_mean.iloc[0]):.4g}"
        assert any(line.replace("*", " ").replace("!", " ").split()[:3] == [str(step), "ok", value]
                   for line in text.splitlines()), text
