"""One private local Ray cluster (2 CPUs) and one token file for the fault tests of this folder.

The cluster is module-scoped so that its warm workers (torch and transformers imported) serve every test of a
module; ``WANDB_DIR`` points into the module's temp dir before Ray starts, so workers inherit it.
"""

from __future__ import annotations

import pytest

from tests.helpers.watch import local_ray, write_tokens


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """The wandb dir (Path) of the module's private Ray cluster."""
    wandb_dir = tmp_path_factory.mktemp("wandb")
    with local_ray(num_cpus=2, wandb_dir=str(wandb_dir)):
        yield wandb_dir


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    return write_tokens(tmp_path_factory.mktemp("data") / "tokens.parquet")
