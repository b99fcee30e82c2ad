import uuid

import pytest

from tests.helpers.checkpoints import Store, moto_s3


@pytest.fixture(scope="module")
def s3_server():
    with moto_s3(buckets=("ckpts",)) as server:
        yield server


@pytest.fixture(params=["local", "memory", "s3"])
def store(request, tmp_path):
    """An empty folder on each backend, so every listing test runs against local disk, memory and moto S3."""
    if request.param == "local":
        yield Store(str(tmp_path / "bucket"))
    elif request.param == "memory":
        yield Store(f"memory://llc-test-{uuid.uuid4().hex[:8]}")
    else:
        _, storage_options = request.getfixturevalue("s3_server")
        yield Store(f"s3://ckpts/{uuid.uuid4().hex[:8]}", storage_options)
