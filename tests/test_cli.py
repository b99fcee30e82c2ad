"""``llc-service`` as users run it: real subprocesses, exit codes, printed lines, files left behind."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from llc_service import read_draws, read_summary
from tests.helpers.checkpoints import make_checkpoint, make_pickle_checkpoint
from tests.helpers.measure import set_args


def run_cli(*args, env=None, timeout=300):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "llc_service.cli", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout)


def test_help_is_instant_and_imports_nothing_heavy():
    code = ("import sys; from llc_service.cli import build_parser\n"
            "for cmd in ([], ['measure'], ['watch'], ['submit'], ['report']):\n"
            "    try: build_parser().parse_args(cmd + ['--help'])\n"
            "    except SystemExit: pass\n"
            "heavy = [m for m in ('torch', 'ray', 'transformers', 'wandb', 'pyarrow', 'pandas') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr
    assert time.perf_counter() - t0 < 10
    for word in ("--data", "--out", "--set", "--processes", "--config"):
        assert word in out.stdout


def test_measure_cli_prints_result_and_writes_parquet(tmp_path, token_parquet):
    ckpt = make_checkpoint(tmp_path / "bucket" / "run-a" / "step42")
    out = tmp_path / "results"
    proc = run_cli("measure", str(ckpt), "--data", token_parquet, "--out", str(out), *set_args(),
                   env={"WANDB_DIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "run-a step 42:  λ̂ = " in proc.stdout and "chains 3/3" in proc.stdout and "[ok]" in proc.stdout
    summary = read_summary(str(out))
    assert list(summary.status) == ["ok"] and int(summary.checkpoint_step.iloc[0]) == 42
    assert list((tmp_path / "wandb").glob("offline-run-*")), "wandb offline run folder missing"


def test_measure_cli_typo_in_config_names_the_field(tmp_path, token_parquet):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("epsilon: 1e-4\nnum_chain: 4\n")
    proc = run_cli("measure", "x", "--data", token_parquet, "--out", str(tmp_path / "out"), "--config", str(cfg))
    assert proc.returncode == 2
    assert "num_chain" in proc.stderr and "num_chains" in proc.stderr  # the unknown key and the suggestion
    proc = run_cli("measure", "x", "--data", token_parquet, "--out", str(tmp_path / "out"), "--set", "epsilon=-1")
    assert proc.returncode == 2 and "epsilon" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_measure_cli_refusal_exits_nonzero_with_a_failed_row(tmp_path, token_parquet):
    bad = make_pickle_checkpoint(tmp_path / "run-b" / "step5")
    out = tmp_path / "results"
    proc = run_cli("measure", str(bad), "--data", token_parquet, "--out", str(out), "--no-wandb", *set_args())
    assert proc.returncode == 1
    assert "failed" in proc.stdout and "pickle" in proc.stdout
    s = read_summary(str(out))
    assert list(s.status) == ["failed"] and "pickle" in s.error.iloc[0]


def test_two_processes_give_the_per_chain_results_of_one(tmp_path, token_parquet):
    """Chains are seeded by chain index, never by rank: splitting 3 chains over 2 gloo processes (2 + 1) gives the
    same per-chain draws, bit for bit, as one process running all three."""
    ckpt = make_checkpoint(tmp_path / "run-c" / "step9")
    outs = {}
    for n in (1, 2):
        out = tmp_path / f"results-{n}"
        proc = run_cli("measure", str(ckpt), "--data", token_parquet, "--out", str(out), "--no-wandb",
                       "--processes", str(n), *set_args(num_draws=8), env={"OMP_NUM_THREADS": "1"})
        assert proc.returncode == 0, proc.stderr[-3000:]
        outs[n] = (read_summary(str(out)).iloc[0], read_draws(str(out)).sort_values(["chain", "draw"]))
    (s1, d1), (s2, d2) = outs[1], outs[2]
    assert int(s1.world_size) == 1 and int(s2.world_size) == 2
    np.testing.assert_array_equal(np.asarray(s1.llc_per_chain), np.asarray(s2.llc_per_chain))
    np.testing.assert_array_equal(d1.loss.to_numpy(), d2.loss.to_numpy())
    assert s1.init_loss == s2.init_loss and s1.llc_mean == s2.llc_mean


def test_more_processes_than_chains_is_refused_before_work(tmp_path, token_parquet):
    ckpt = make_checkpoint(tmp_path / "run-d" / "step1")
    proc = run_cli("measure", str(ckpt), "--data", token_parquet, "--out", str(tmp_path / "out"), "--no-wandb",
                   "--processes", "4", *set_args(num_chains=2))
    assert proc.returncode == 2 and "more than num_chains" in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args", [["report", "--help"], ["submit", "--help"]])
def test_subcommand_help(args):
    proc = run_cli(*args, timeout=60)
    assert proc.returncode == 0 and "usage: llc-service" in proc.stdout
