"""A two-node Ray cluster on this machine, private to the test module that uses it.

``RAY_TMPDIR`` points at a private folder so that the cluster's sessions, sockets and its address file
(``ray_current_cluster``) stay out of ``/tmp/ray``: nobody else's ``ray.init()`` on this machine joins it. It is
stopped by its own handle, never with ``ray stop``.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


@pytest.fixture(scope="module")
def ray_two_nodes():
    """(cluster, {"node_a": node_id, "node_b": node_id}); one CPU per node, the driver connected."""
    import ray
    from ray.cluster_utils import Cluster

    saved = {k: os.environ.get(k) for k in [*ENV, "RAY_TMPDIR"]}
    tmp = tempfile.mkdtemp(prefix="llcray", dir="/tmp")  # short: Unix socket paths are limited to ~107 bytes
    os.environ.update(ENV, RAY_TMPDIR=tmp)
    cluster = Cluster()
    try:
        head = cluster.add_node(num_cpus=1, resources={"node_a": 1}, include_dashboard=False)
        worker = cluster.add_node(num_cpus=1, resources={"node_b": 1})
        cluster.wait_for_nodes(timeout=60)
        ray.init(address=cluster.address)
        yield cluster, {"node_a": head.node_id, "node_b": worker.node_id}
    finally:
        ray.shutdown()
        cluster.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(tmp, ignore_errors=True)
