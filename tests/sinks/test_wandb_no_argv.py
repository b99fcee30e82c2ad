"""The wandb run file (uploaded by ``wandb sync``) carries neither the command line nor credentials.

wandb records the process's ``sys.argv`` as ``args`` in its system metadata unless that is turned off; a
``--storage-options`` JSON on the command line used to land there verbatim. Here the argv and the row's config
both carry planted secrets, and the raw bytes of everything wandb wrote are searched for them.
"""

from __future__ import annotations

import json
import sys

import pytest

from llc_service.sinks.wandb import WandbSink
from tests.sinks.records import ok_record
from tests.sinks.wandb_records import read_run, wait_for_exit
from tests.worker.test_credential_leak import files_containing

ARGV_SECRET = "planted-argv-secret-91be0d"
CONFIG_SECRET = "planted-config-secret-44c2a1"


@pytest.fixture
def wandb_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    yield tmp_path
    import wandb

    wandb.teardown()


def test_run_file_has_no_argv_and_no_credentials(wandb_dir, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["llc-service", "measure", "ckpt", "--storage-options",
                                      json.dumps({"secret": ARGV_SECRET})])
    rec = ok_record()
    opts = {"key": "AKIAPLANTEDCFG00001", "secret": CONFIG_SECRET, "client_kwargs": {"endpoint_url": "http://m:9"}}
    rec.summary["config_json"] = json.dumps({"nbeta": 30.0, "storage_options": opts, "password": CONFIG_SECRET})
    WandbSink("llc-test").write(rec)
    (path,) = sorted((wandb_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    wait_for_exit(path)
    run = read_run(path)
    assert run["config"]["nbeta"] == 30.0 and run["summary"]["llc_mean"] == 12.5  # the run is really there
    assert run["config"]["storage_options"]["client_kwargs"] == {"endpoint_url": "http://m:9"}
    # positive control: the raw search finds strings the run file does hold
    assert set(files_containing([wandb_dir], ["http://m:9", "AKIAPLANTEDCFG00001"])) == {"http://m:9"}
    assert files_containing([wandb_dir], [ARGV_SECRET, CONFIG_SECRET, "--storage-options"]) == {}
