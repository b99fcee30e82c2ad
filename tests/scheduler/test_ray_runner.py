"""run_measurements on a two-node Ray cluster: placement, retries after a worker dies, no retry of app errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llc_service.config import MeasureConfig
from llc_service.scheduler.ray_runner import run_measurements, task_options
from tests.scheduler import fake_units


def _cfg(**kw) -> MeasureConfig:
    return MeasureConfig(device="cpu", cpus_per_measurement=1, max_retries=2, progress=False, **kw)


def _units(tmp_path: Path, names, **extra) -> list[dict]:
    return [{"checkpoint": str(tmp_path / "ckpts" / n), "data_uri": "unused", "results_uri": str(tmp_path),
             **extra} for n in names]


def _attempts(tmp_path: Path, name: str) -> int:
    path = tmp_path / f"{name}.attempts"
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_task_options_cpu_and_gpu():
    cfg = MeasureConfig(cpus_per_measurement=4, gpus_per_measurement=1, max_retries=3)
    cpu = task_options(cfg, {"CPU": 8})
    assert cpu["num_cpus"] == 4 and "num_gpus" not in cpu and cpu["max_retries"] == 3
    assert cpu["runtime_env"]["env_vars"]["OMP_NUM_THREADS"] == "4"
    assert task_options(cfg, {"CPU": 8, "GPU": 2})["num_gpus"] == 1
    cfg.device = "cpu"
    assert "num_gpus" not in task_options(cfg, {"CPU": 8, "GPU": 2})


def test_a_measurement_over_several_processes_reserves_them_on_its_node():
    """--processes N (chain groups, or one model sharded over N): N GPUs, or N CPUs at least, and one thread each."""
    cfg = MeasureConfig(cpus_per_measurement=1, gpus_per_measurement=1, processes=4, shard_size=2)
    gpu = task_options(cfg, {"CPU": 32, "GPU": 8})
    assert gpu["num_gpus"] == 4 and gpu["num_cpus"] == 1
    cpu = task_options(MeasureConfig(device="cpu", cpus_per_measurement=1, processes=4), {"CPU": 8})
    assert cpu["num_cpus"] == 4 and "num_gpus" not in cpu
    assert cpu["runtime_env"]["env_vars"]["OMP_NUM_THREADS"] == "1"
    more = task_options(MeasureConfig(device="cpu", cpus_per_measurement=8, processes=2), {"CPU": 8})
    assert more["num_cpus"] == 8 and more["runtime_env"]["env_vars"]["OMP_NUM_THREADS"] == "4"


def test_two_units_run_concurrently_on_two_nodes(ray_two_nodes, tmp_path):
    _, nodes = ray_two_nodes
    units = _units(tmp_path, ["step1", "step2"], sleep=2.0)
    rows = [row for _, row in run_measurements(units, _cfg(), fake_units.sleepy_unit)]
    assert [r["status"] for r in rows] == ["ok", "ok"]
    infos = [json.loads((tmp_path / f"{n}.json").read_text()) for n in ("step1", "step2")]
    assert {i["node_id"] for i in infos} == set(nodes.values())  # one unit per node
    a, b = infos
    assert a["start"] < b["end"] and b["start"] < a["end"], "units did not overlap in time"
    assert all(i["omp_num_threads"] == "1" for i in infos)


def test_worker_killed_mid_unit_is_retried_and_leaves_one_result(ray_two_nodes, tmp_path):
    [(unit, row)] = list(run_measurements(_units(tmp_path, ["step3"]), _cfg(), fake_units.dies_once_unit))
    assert row["status"] == "ok" and row["attempt_seen"] == 2
    assert _attempts(tmp_path, "step3") == 2
    assert sorted(p.name for p in tmp_path.glob("*.json")) == ["step3.json"]
    assert json.loads((tmp_path / "step3.json").read_text()) == {"attempt": 2}


def test_application_error_is_not_retried_and_is_a_failed_row(ray_two_nodes, tmp_path):
    [(unit, row)] = list(run_measurements(_units(tmp_path, ["step4"]), _cfg(), fake_units.raises_unit))
    assert row["status"] == "failed" and row["error_kind"] == "permanent"
    assert "ValueError: bad checkpoint" in row["error"]
    assert row["checkpoint_uri"] == unit["checkpoint"]
    assert _attempts(tmp_path, "step4") == 1


def test_transient_failed_row_is_retried(ray_two_nodes, tmp_path):
    [(_, row)] = list(run_measurements(_units(tmp_path, ["step5"]), _cfg(), fake_units.transient_once_unit))
    assert row["status"] == "ok" and row["attempt_seen"] == 2
    assert _attempts(tmp_path, "step5") == 2


def test_worker_dying_every_time_gives_up_with_a_transient_failed_row(ray_two_nodes, tmp_path):
    cfg = _cfg()
    cfg.max_retries = 1
    [(_, row)] = list(run_measurements(_units(tmp_path, ["step6"]), cfg, fake_units.always_dies_unit))
    assert row["status"] == "failed" and row["error_kind"] == "transient"
    assert _attempts(tmp_path, "step6") == 2  # first try + one retry


@pytest.mark.parametrize("limit", [1])
def test_max_concurrent_serialises_units(ray_two_nodes, tmp_path, limit):
    units = _units(tmp_path, ["s7", "s8"], sleep=0.5)
    rows = [row for _, row in run_measurements(units, _cfg(), fake_units.sleepy_unit, max_concurrent=limit)]
    assert len(rows) == 2
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("s7", "s8"))
    assert a["end"] <= b["start"] or b["end"] <= a["start"]


def test_real_measurements_run_on_both_nodes_and_land_once(ray_two_nodes, tmp_path, token_parquet):
    """The default unit (measure_checkpoint) on real checkpoints: one CPU per node, so two measurements that
    overlap in time ran on different nodes; each leaves exactly one summary row."""
    from llc_service import read_draws, read_summary
    from tests.helpers.checkpoints import make_checkpoint
    from tests.helpers.measure import small_config

    ckpts = [make_checkpoint(tmp_path / "bucket" / "run-r" / f"step{s}", seed=s) for s in (10, 20)]
    out = str(tmp_path / "results")
    units = [{"checkpoint": str(c), "data_uri": token_parquet, "results_uri": out, "use_wandb": False}
             for c in ckpts]
    cfg = small_config(device="cpu", cpus_per_measurement=1, num_draws=40)
    rows = [row for _, row in run_measurements(units, cfg)]
    assert sorted(r["status"] for r in rows) == ["ok", "ok"], [r.get("error") for r in rows]
    summary = read_summary(out)
    assert sorted(summary.checkpoint_step.tolist()) == [10, 20]
    a, b = summary.itertuples()
    assert a.started_at < b.ended_at and b.started_at < a.ended_at, "measurements did not overlap in time"
    assert len(read_draws(out)) == 2 * cfg.num_chains * cfg.num_draws
