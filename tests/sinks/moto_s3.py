"""A moto S3 server on 127.0.0.1 for tests (the real S3 HTTP API, no network), shared by tests/data too."""

from __future__ import annotations

import socket
import uuid

import pytest

KEYS = {"key": "testing", "secret": "testing"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint, monkeypatch):
    """(``s3://<fresh bucket>``, storage_options) pointing s3fs at the moto server."""
    import s3fs

    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(var, "testing")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    options = {**KEYS, "client_kwargs": {"endpoint_url": s3_endpoint}}  # region from AWS_DEFAULT_REGION
    name = f"llc-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(skip_instance_cache=True, **options).mkdir(name)
    return f"s3://{name}", options
