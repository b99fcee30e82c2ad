"""The deployable files in jobs/ and cluster/ stay consistent with the code: they parse, name real subcommands and
real files, and their entrypoints parse with the real argument parsers."""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from llc_service.cli import build_parser
from llc_service.scheduler.job_spec import load_job

ROOT = Path(__file__).resolve().parents[2]
SUBCOMMANDS = {"measure", "watch", "submit", "report", "calibrate"}
YAMLS = sorted([*ROOT.glob("jobs/*.yaml"), *ROOT.glob("cluster/**/*.yaml")])
JOBS = sorted(ROOT.glob("jobs/*.yaml"))
TEXT_FILES = [*YAMLS, *ROOT.glob("cluster/**/*.sbatch"), ROOT / "jobs" / "measure_many.py",
              ROOT / "docs" / "cluster.md"]
SBATCH = ROOT / "cluster" / "slurm" / "llc-service.sbatch"


def _rel(p: Path) -> str:
    return str(p.relative_to(ROOT))


def test_there_is_something_to_check():
    assert {p.name for p in JOBS} >= {"measure_one.yaml", "measure_many.yaml", "watch.yaml"}
    assert (ROOT / "cluster/kuberay/raycluster.yaml").exists() and (ROOT / "cluster/ray-up/cluster.yaml").exists()


@pytest.mark.parametrize("path", YAMLS, ids=_rel)
def test_yaml_parses(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs and all(isinstance(d, dict) for d in docs)


def _gpu_group(cluster_spec: dict) -> dict:
    groups = cluster_spec["workerGroupSpecs"]
    gpu = [g for g in groups
           if any("nvidia.com/gpu" in c.get("resources", {}).get("limits", {})
                  for c in g["template"]["spec"]["containers"])]
    assert gpu, "no worker group with an nvidia.com/gpu limit"
    return gpu[0]


def test_kuberay_raycluster():
    doc = yaml.safe_load((ROOT / "cluster/kuberay/raycluster.yaml").read_text())
    assert doc["apiVersion"].startswith("ray.io/") and doc["kind"] == "RayCluster"
    assert "headGroupSpec" in doc["spec"]
    assert _gpu_group(doc["spec"])["maxReplicas"] >= 1


def test_kuberay_rayjob_runs_the_watcher():
    doc = yaml.safe_load((ROOT / "cluster/kuberay/rayjob.yaml").read_text())
    assert doc["kind"] == "RayJob"
    assert shlex.split(doc["spec"]["entrypoint"])[:2] == ["llc-service", "watch"]
    _gpu_group(doc["spec"]["rayClusterSpec"])
    build_parser().parse_args(shlex.split(doc["spec"]["entrypoint"])[1:])


def test_ray_up_has_a_gpu_worker_type_that_installs_the_package():
    doc = yaml.safe_load((ROOT / "cluster/ray-up/cluster.yaml").read_text())
    types = doc["available_node_types"]
    assert doc["head_node_type"] in types
    assert any(t["node_config"]["InstanceType"].startswith(("g", "p")) for t in types.values())
    assert any("pip install" in c for c in doc["setup_commands"])


@pytest.mark.parametrize("path", TEXT_FILES, ids=_rel)
def test_llc_service_subcommands_exist(path):
    assert set(build_parser()._subparsers._group_actions[0].choices) == SUBCOMMANDS  # noqa: SLF001
    used = re.findall(r"llc-service[ \t]+([a-zA-Z][a-zA-Z-]*)", path.read_text())
    assert set(used) <= SUBCOMMANDS, f"{_rel(path)} names unknown subcommands {set(used) - SUBCOMMANDS}"


@pytest.mark.parametrize("path", TEXT_FILES, ids=_rel)
def test_repo_files_referenced_exist(path):
    refs = set(re.findall(r"(?<![\w/.-])((?:jobs|scripts|cluster|docs|llc_service)/[\w./-]*\w)", path.read_text()))
    missing = sorted(r for r in refs if not (ROOT / r).exists())
    assert not missing, f"{_rel(path)} references missing files {missing}"


def _measure_many_parser():
    spec = importlib.util.spec_from_file_location("measure_many", ROOT / "jobs" / "measure_many.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.build_parser()


@pytest.mark.parametrize("path", JOBS, ids=_rel)
def test_job_entrypoints_parse_with_the_real_parsers(path):
    job = load_job(str(path))
    argv = shlex.split(job.fields["entrypoint"])
    if argv[0] == "llc-service":
        build_parser().parse_args(argv[1:])
    else:
        assert argv[:2] == ["python", "jobs/measure_many.py"]
        _measure_many_parser().parse_args(argv[2:])
    assert Path(job.fields["runtime_env"]["working_dir"]) == ROOT  # `working_dir: ..` is relative to the file
    for arg in argv:
        if arg.startswith(("jobs/", "scripts/")):
            assert (ROOT / arg).exists(), arg


def test_sbatch_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(SBATCH)], check=True, timeout=30)
    text = SBATCH.read_text()
    assert "ray stop" not in text.replace("never `ray stop`", "")  # stops its own PIDs only
    assert "--temp-dir" in text and "--block" in text
