"""Job files: typed --set overrides, {{params}}, stable content-derived submission ids."""

from __future__ import annotations

import importlib.util
import os
import textwrap
from pathlib import Path

import pytest

from llc_service.scheduler.job_spec import load_job

JOB = textwrap.dedent("""\
    name: demo job
    params: {checkpoint: s3://b/run/step1, extra: ""}
    entrypoint: "llc-service measure {{checkpoint}} --data d --out o {{extra}}"
    entrypoint_num_cpus: 2
    runtime_env:
      working_dir: ..
      env_vars: {A: 1}
    metadata: {team: interp}
""")


@pytest.fixture
def job(tmp_path) -> str:
    (tmp_path / "jobs").mkdir()
    path = tmp_path / "jobs" / "demo.yaml"
    path.write_text(JOB)
    return str(path)


def test_load_fills_params_and_types(job, tmp_path):
    spec = load_job(job)
    assert spec.fields["entrypoint"] == "llc-service measure s3://b/run/step1 --data d --out o"
    assert spec.fields["entrypoint_num_cpus"] == 2.0
    assert spec.fields["runtime_env"]["env_vars"] == {"A": "1"}  # Ray wants strings
    assert spec.fields["runtime_env"]["working_dir"] == str(tmp_path)  # relative to the job file
    assert spec.submission_id.startswith("llc-demo-job-")
    assert "params" not in spec.fields and "name" not in spec.fields


def test_sets_are_typed(job):
    spec = load_job(job, ["entrypoint_num_gpus=1", "metadata.rerun=2", "params.checkpoint=s3://b/run/step9",
                          "runtime_env.env_vars.WANDB_MODE=online", "runtime_env.pip=[torch, numpy]",
                          "entrypoint_resources.node_a=0.5", "params.extra=--no-wandb"])
    f = spec.fields
    assert f["entrypoint_num_gpus"] == 1.0 and f["metadata"] == {"team": "interp", "rerun": "2"}
    assert f["entrypoint"].endswith("s3://b/run/step9 --data d --out o --no-wandb")
    assert f["runtime_env"]["env_vars"]["WANDB_MODE"] == "online"
    assert f["runtime_env"]["pip"] == ["torch", "numpy"]
    assert f["entrypoint_resources"] == {"node_a": 0.5}


@pytest.mark.parametrize("bad, match", [
    ("entrypoint_num_cpu=1", "did you mean 'entrypoint_num_cpus'"),
    ("entrypoint_num_cpus=lots", "expects a number"),
    ("entrypoint_memory=1.5", "expects an integer"),
    ("novalue", "key=value"),
    ("entrypoint_num_cpus.x=1", "not a mapping"),
])
def test_bad_sets_are_clear_errors(job, bad, match):
    with pytest.raises(ValueError, match=match):
        load_job(job, [bad])


def test_missing_param_is_an_error(job):
    with pytest.raises(ValueError, match="params has no 'data'"):
        load_job(job, ["entrypoint=llc-service measure {{data}}"])


def test_submission_id_is_stable_and_content_derived(job, tmp_path, monkeypatch):
    first = load_job(job).submission_id
    monkeypatch.chdir(tmp_path / "jobs")
    assert load_job("demo.yaml").submission_id == first  # not where you run it from
    other = tmp_path / "elsewhere"  # nor where the checkout lives
    other.mkdir()
    (other / "demo.yaml").write_text(JOB)
    assert load_job(str(other / "demo.yaml")).submission_id == first
    assert load_job(job, ["params.checkpoint=s3://b/run/step2"]).submission_id != first
    assert load_job(job, ["metadata.rerun=1"]).submission_id != first
    assert load_job(job, ["submission_id=mine"]).submission_id == "mine"


def test_measure_many_reads_args_and_file(tmp_path):
    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("measure_many", root / "jobs" / "measure_many.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    listing = tmp_path / "ckpts.txt"
    listing.write_text("# comment\ns3://b/r/step2\n\ns3://b/r/step1  # trailing\ns3://b/r/step2\n")
    assert mod.read_checkpoints(["s3://b/r/step0"], str(listing)) == ["s3://b/r/step0", "s3://b/r/step2",
                                                                      "s3://b/r/step1"]
    assert os.path.basename(mod.__file__) == "measure_many.py"
