import uuid

import pytest

from tests.helpers.checkpoints import Store, moto_s3


@pytest.fixture(scope="module")
def s3_server():
    with moto_s3(buckets=("ckpts",)) as server:
        yield server


@pytest.fixture
def s3_store(s3_server):
    _, storage_options = s3_server
    return Store(f"s3://ckpts/{uuid.uuid4().hex[:8]}", storage_options)
