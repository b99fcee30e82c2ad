"""Test-wide environment: offline hub, no Ray usage stats, loopback-only Ray, wandb offline, private HF_HOME."""

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
if "HF_HOME" not in os.environ:
    os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="llc-test-hf-")


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def token_parquet(tmp_path_factory):
    """64 rows of 32 real tokens (stdlib source, tiny BPE) as Parquet: DATA for end-to-end measurements."""
    from tests.helpers.measure import write_token_parquet

    return write_token_parquet(tmp_path_factory.mktemp("data") / "tokens.parquet")
