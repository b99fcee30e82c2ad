"""Planted credentials never reach anything the service writes (issue 14, item 4).

Fake credentials with distinctive values go in through the allowed channels: a mode-600 storage-options file
(``--storage-options @FILE``) and ``AWS_*`` environment variables. Real ``llc-service`` subprocesses then measure a
real checkpoint and read real data from S3 (moto's server on loopback; it accepts any key), with wandb offline and
debug logging on. Every file they wrote (results, claims, the wandb run folder with its binary run file and debug
logs, Ray's session logs, stdout and stderr) is searched byte by byte for the planted values.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from llc_service import read_summary
from tests.helpers.checkpoints import Store, make_checkpoint, moto_s3
from tests.helpers.measure import set_args, write_token_parquet
from tests.helpers.watch import cli_env, cli_path, tiny_sets

FILE_KEY, FILE_SECRET = "AKIAPLANTEDFILEKEY01", "planted-file-secret-7f1d2c9b-do-not-leak"
ENV_KEY, ENV_SECRET, ENV_TOKEN = "AKIAPLANTEDENVKEY001", "planted-env-secret-3a8e51-do-not-leak", \
    "planted-env-session-token-c40d77"
PLANTED = (FILE_KEY, FILE_SECRET, ENV_KEY, ENV_SECRET, ENV_TOKEN)


def files_containing(roots, needles) -> dict[str, list[str]]:
    """{needle: [files holding it]} over every regular file under ``roots`` (binary-safe)."""
    hits: dict[str, list[str]] = {}
    for root in roots:
        for dirpath, _, names in os.walk(root):
            for name in names:
                path = os.path.join(dirpath, name)
                if os.path.islink(path) or not os.path.isfile(path):
                    continue
                try:
                    data = Path(path).read_bytes()
                except OSError:
                    continue
                for needle in needles:
                    if needle.encode() in data:
                        hits.setdefault(needle, []).append(path)
    return hits


def _env(tmp: Path, **aws) -> dict:
    env = cli_env(tmp)
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        env.pop(var, None)
    env.update(aws, AWS_DEFAULT_REGION="us-east-1", NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost",
               WANDB_DIR=str(tmp / "wandb-dir"))
    (tmp / "wandb-dir").mkdir(exist_ok=True)
    return env


def _run(args: list[str], env: dict, log_dir: Path, name: str, timeout: float = 400):
    proc = subprocess.run([cli_path(), *args], env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=str(log_dir))
    (log_dir / f"{name}.stdout").write_text(proc.stdout)
    (log_dir / f"{name}.stderr").write_text(proc.stderr)
    return proc


@pytest.fixture
def s3_inputs(tmp_path):
    """A checkpoint and token data in a moto bucket; yields (endpoint, checkpoint uri, data uri)."""
    with moto_s3(buckets=("leakck",)) as (endpoint, opts):
        store = Store("s3://leakck/leakrun", opts)
        ckpt = store.put(make_checkpoint(tmp_path / "local" / "step10", trainer_step=10), "step10")
        data = write_token_parquet(tmp_path / "local" / "tokens.parquet")
        Store("s3://leakck", opts).put_file(data, "data/tokens.parquet")
        yield endpoint, ckpt, "s3://leakck/data/tokens.parquet"


@pytest.mark.slow  # ~85 s on 2 busy cores (a CLI subprocess importing torch, S3 reads, debug logging); the fast
# guard of the wandb part is tests/sinks/test_wandb_no_argv.py
def test_measure_with_a_credentials_file_leaks_nothing(tmp_path, s3_inputs):
    endpoint, ckpt, data = s3_inputs
    work = tmp_path / "work"
    work.mkdir()
    secret_dir = tmp_path / "private"  # outside the searched folders
    secret_dir.mkdir(mode=0o700)
    so = secret_dir / "storage-options.json"
    so.write_text(json.dumps({"key": FILE_KEY, "secret": FILE_SECRET, "client_kwargs": {"endpoint_url": endpoint}}))
    so.chmod(0o600)
    out = work / "results"

    proc = _run(["measure", ckpt, "--data", data, "--out", str(out), "--storage-options", f"@{so}", "-v",
                 *set_args(num_chains=2, num_draws=6)], _env(work), work, "measure")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert list(read_summary(str(out)).status) == ["ok"]  # it really measured, reading S3 with those credentials
    wandb_runs = list((work / "wandb-dir" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert wandb_runs and list(out.rglob("*.parquet")), "nothing written: the search below would prove nothing"

    # the search sees what is there: the credentials file holds them (positive control)
    assert set(files_containing([secret_dir], PLANTED)) == {FILE_KEY, FILE_SECRET}
    assert files_containing([work], PLANTED) == {}
    # the command line is no longer in the wandb run file (it used to be, verbatim, under "args")
    assert files_containing([work / "wandb-dir"], ["--storage-options", str(so)]) == {}


@pytest.mark.slow  # ~100 s: a watcher starting a local Ray cluster
def test_watch_with_aws_variables_leaks_nothing_into_results_claims_wandb_or_ray_logs(tmp_path, s3_inputs):
    endpoint, ckpt, data = s3_inputs
    work = tmp_path / "work"
    work.mkdir()
    env = _env(work, AWS_ACCESS_KEY_ID=ENV_KEY, AWS_SECRET_ACCESS_KEY=ENV_SECRET, AWS_SESSION_TOKEN=ENV_TOKEN)
    out = work / "results"
    try:
        proc = _run(["watch", ckpt.rsplit("/", 1)[0], "--data", data, "--out", str(out), "--once", "--interval",
                     "0.5", "-v", "--storage-options", json.dumps({"client_kwargs": {"endpoint_url": endpoint}}),
                     *tiny_sets(wandb_project="llc-leak")], env, work, "watch")
        assert proc.returncode == 0, proc.stderr[-4000:]
        assert list(read_summary(str(out)).status) == ["ok"], proc.stderr[-3000:]
        claims = [p for p in out.rglob("*") if p.is_file() and "claim" in str(p.relative_to(out))]
        assert claims, "no claim written: the search would not cover claims"
        assert list((work / "wandb-dir" / "wandb").glob("offline-run-*/run-*.wandb"))
        assert files_containing([work, env["RAY_TMPDIR"]], PLANTED) == {}
    finally:
        shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)
