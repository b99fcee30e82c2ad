"""Credentials on a command line are refused (exit 2, the key named, the value never printed); the allowed
channels (a private @FILE, AWS_* variables, profiles) work. The end-to-end leak search is in
tests/worker/test_credential_leak.py."""

from __future__ import annotations

import json

import pytest

from llc_service.cli import main
from llc_service.credentials import (
    CredentialsError,
    parse_storage_options,
    redact,
    refuse_secrets_in_job,
    secret_paths,
)

SECRET = "wJalrXUtnFEMI-K7MDENG-planted-0f3c"
KEY_ID = "AKIAPLANTEDKEYID0001"


def test_secret_keys_at_any_depth_and_what_is_not_one():
    opts = {"key": KEY_ID, "secret": SECRET, "anon": False, "profile": "lab", "endpoint_url": "http://x",
            "client_kwargs": {"aws_secret_access_key": SECRET, "region_name": "eu-west-1",
                              "config": {"signature_version": "s3v4"}},
            "token": "anon", "tokenizer": "gpt2", "session_token": None, "list": [{"password": "p"}]}
    assert sorted(secret_paths(opts)) == ["client_kwargs.aws_secret_access_key", "key", "list.0.password", "secret"]
    red = redact(opts)
    assert SECRET not in json.dumps(red) and KEY_ID not in json.dumps(red)
    assert red["profile"] == "lab" and red["tokenizer"] == "gpt2" and red["token"] == "anon"
    assert red["client_kwargs"]["region_name"] == "eu-west-1"
    assert red["client_kwargs"]["config"] == {"signature_version": "s3v4"}


def test_storage_options_from_a_private_file_only(tmp_path):
    f = tmp_path / "so.json"
    f.write_text(json.dumps({"key": KEY_ID, "secret": SECRET}))
    f.chmod(0o600)
    assert parse_storage_options(f"@{f}") == {"key": KEY_ID, "secret": SECRET}
    for mode in (0o640, 0o604):
        f.chmod(mode)
        with pytest.raises(CredentialsError, match="chmod 600") as exc:
            parse_storage_options(f"@{f}")
        assert SECRET not in str(exc.value)
    f.chmod(0o600)
    f.write_text(f'{{"secret": "{SECRET}",}}')
    with pytest.raises(CredentialsError, match="not valid JSON") as exc:
        parse_storage_options(f"@{f}")
    assert SECRET not in str(exc.value)
    assert parse_storage_options('{"anon": true, "profile": "lab"}') == {"anon": True, "profile": "lab"}


@pytest.mark.parametrize("argv, names", [
    (["--storage-options", json.dumps({"key": KEY_ID, "secret": SECRET})], ["'key'", "'secret'"]),
    (["--storage-options",
      json.dumps({"client_kwargs": {"endpoint_url": "http://h", "aws_secret_access_key": SECRET}})],
     ["client_kwargs.aws_secret_access_key"]),
    (["--set", f'storage_options={{"token": "{SECRET}"}}'], ["'token'"]),
    (["--storage-options", f'{{"password": "{SECRET}"'], ["not valid JSON"]),  # malformed: still not echoed
])
@pytest.mark.parametrize("command", ["measure", "watch"])
def test_cli_refuses_credentials_and_never_prints_them(tmp_path, capsys, command, argv, names):
    code = main([command, str(tmp_path / "ckpt"), "--data", "d.parquet", "--out", str(tmp_path / "out"), *argv])
    out, err = capsys.readouterr()
    assert code == 2
    assert all(n in err for n in names), err
    assert SECRET not in out + err and KEY_ID not in out + err
    if "JSON" not in names[0]:
        assert "AWS_SECRET_ACCESS_KEY" in err and "@FILE" in err and "profile" in err  # where they belong
    assert not (tmp_path / "out").exists()


def test_report_refuses_them_too(tmp_path, capsys):
    assert main(["report", str(tmp_path), "--storage-options", json.dumps({"secret": SECRET})]) == 2
    assert SECRET not in "".join(capsys.readouterr())


def test_a_readable_config_file_with_credentials_is_refused(tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"num_chains: 2\nstorage_options: {{key: {KEY_ID}, secret: {SECRET}}}\n")
    cfg.chmod(0o644)
    assert main(["measure", "x", "--data", "d", "--out", str(tmp_path / "out"), "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "chmod 600" in err and SECRET not in err


@pytest.mark.parametrize("job, words", [
    ({"entrypoint": f"llc-service measure c --data d --out o --storage-options '{json.dumps({'secret': SECRET})}'"},
     "'secret'"),
    ({"entrypoint": f"AWS_SECRET_ACCESS_KEY={SECRET} llc-service watch s --data d --out o"}, "AWS_SECRET_ACCESS_KEY"),
    ({"entrypoint": "llc-service watch s --data d --out o",
      "runtime_env": {"env_vars": {"WANDB_API_KEY": SECRET}}}, "runtime_env.env_vars.WANDB_API_KEY".split(".")[-1]),
])
def test_submit_refuses_credentials_in_a_job_before_contacting_the_cluster(tmp_path, capsys, job, words):
    import yaml

    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    # nothing listens at this address: the refusal comes first
    assert main(["submit", str(path), "--address", "http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert words in err and "dashboard" in err and SECRET not in err
    # the allowed forms pass the check
    refuse_secrets_in_job({"entrypoint": "llc-service watch s --storage-options @/home/me/so.json "
                                         "--storage-options '{\"profile\": \"lab\"}'",
                           "runtime_env": {"env_vars": {"WANDB_MODE": "offline"}}}, "ok.yaml")
