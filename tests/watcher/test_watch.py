"""``llc-service watch``: usage errors (no Ray needed) and the CLI end to end on S3 (moto) as a subprocess.

The fault cases (bad checkpoints, late uploads, killed workers and watchers, divergence, a results store that goes
away) are in ``tests/faults/test_watch_faults.py``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from llc_service.cli import main
from llc_service.watcher.claims import ClaimStore
from llc_service.watcher.watch import watch
from tests.helpers.checkpoints import Store, make_checkpoint, moto_s3
from tests.helpers.watch import cli_env, cli_path, rows_by_step, tiny_config, tiny_sets, write_tokens


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    return write_tokens(tmp_path_factory.mktemp("data") / "tokens.parquet")


def test_usage_errors_exit_2_with_a_clear_message(tmp_path, tokens, capsys):
    cfg = tiny_config()
    (tmp_path / "src").mkdir()
    out = str(tmp_path / "results")
    cases = [
        (dict(source=str(tmp_path / "nope"), data_uri=tokens), "source"),
        (dict(source=str(tmp_path / "src"), data_uri=str(tmp_path / "missing.parquet")), "data"),
        (dict(source="nosuchproto://x/y", data_uri=tokens), "no checkpoint source for protocol"),
        (dict(source=str(tmp_path / "src"), data_uri=tokens, interval=0), "--interval"),
        (dict(source=str(tmp_path / "src"), data_uri=tokens, max_concurrent=0), "--max-concurrent"),
    ]
    for kwargs, words in cases:
        assert watch(results_uri=out, cfg=cfg, once=True, **kwargs) == 2, kwargs
        err = capsys.readouterr().err
        assert "llc-service watch: error:" in err and words in err, err
    # through the CLI's argument handling too (in-process: nothing starts)
    assert main(["watch", str(tmp_path / "nope"), "--data", tokens, "--out", out, "--once"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["watch", str(tmp_path / "src"), "--data", tokens, "--out", out, "--set", "lease_seconds=0"]) == 2
    assert "lease_seconds" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def test_cli_watch_once_on_s3_source_and_results(tmp_path):
    """S3 source, data and results (moto): every complete checkpoint measured once, pending ones reported; a second
    ``--once`` run measures nothing and leaves the results untouched."""
    with moto_s3(buckets=("wsrc", "wres")) as (_, opts):
        src = Store("s3://wsrc/cli", opts)
        for seed, step in enumerate((100, 200)):
            src.put(make_checkpoint(tmp_path / "local" / f"step{step}", seed=seed), f"run1/step{step}")
        # a partial upload: no weights yet
        src.put(make_checkpoint(tmp_path / "local" / "step300", seed=2), "run1/step300", skip=("model.safetensors",))
        data = "s3://wres/data/tokens.parquet"
        Store("s3://wres", opts).put_file(write_tokens(tmp_path / "tokens.parquet"), "data/tokens.parquet")
        out = "s3://wres/llc"
        args = [cli_path(), "watch", src.uri(), "--data", data, "--out", out, "--once", "--interval", "0.5",
                "--storage-options", json.dumps({"client_kwargs": opts["client_kwargs"]}), "--no-wandb", *tiny_sets()]
        env = cli_env(tmp_path)  # credentials through the environment: the CLI refuses them on the command line
        env.update(AWS_ACCESS_KEY_ID=opts["key"], AWS_SECRET_ACCESS_KEY=opts["secret"])
        try:
            first = subprocess.run(args, env=env, capture_output=True, text=True, timeout=400, cwd=str(tmp_path))
            assert first.returncode == 0, first.stderr[-4000:]
            for step in (100, 200):
                assert re.search(rf"run1 step {step}:  λ̂ = \S+ ± .*\[ok\]", first.stderr), first.stderr[-4000:]
            assert "1 pending: run1 step 300 (no model.safetensors" in first.stderr
            rows = rows_by_step(out, opts)
            assert sorted(rows) == [100, 200]
            assert all(len(v) == 1 and v[0]["status"] == "ok" and v[0]["attempt"] == 1 for v in rows.values())
            claims = ClaimStore(out, opts).list_claims()
            assert len(claims) == 2 and all(c.released_at is not None for c in claims)

            etags = {p: i["ETag"] for p, i in Store(out, opts)._fs()[0].find("wres/llc/summary", detail=True).items()}
            second = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
            assert second.returncode == 0, second.stderr[-4000:]
            assert "2 already measured" in second.stderr and "dispatched" not in second.stderr
            again = {p: i["ETag"] for p, i in Store(out, opts)._fs()[0].find("wres/llc/summary", detail=True).items()}
            assert again == etags
        finally:
            shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)

        # a bucket that does not exist is a usage error; a prefix nobody has written to yet is not (training may
        # not have saved anything so far): --once then finds nothing and exits at once, without starting Ray
        cfg = tiny_config(storage_options=opts)
        assert watch("s3://no-such-bucket/run1", data, out, cfg, once=True) == 2
        assert watch("s3://wsrc/not-yet", data, out, cfg, once=True) == 0
