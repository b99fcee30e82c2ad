"""Where this process's shard of an FSDP2-sharded tensor (a DTensor) sits in the whole tensor.

FSDP2 shards dim 0 (rows), so a shard is one contiguous range of the flattened tensor. Used by the sharded loader
(which slice of the files to read), the sharded sampler (which noise values are this shard's) and the sharded
weight checks (which elements this process hashes).
"""

from __future__ import annotations

import torch


def local_box(t: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...], tuple[int, ...]]:
    """(this process's local tensor, its shape, its offset in the global tensor): a DTensor's shard, or all of a
    plain tensor."""
    from torch.distributed.tensor import DTensor

    if isinstance(t, DTensor):
        from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

        shape, offset = compute_local_shape_and_global_offset(t.shape, t.device_mesh, t.placements)
        return t.to_local(), tuple(shape), tuple(offset)
    return t, tuple(t.shape), (0,) * t.dim()


def flat_start(t: torch.Tensor) -> int:
    """Where this process's shard of ``t`` starts in ``t`` flattened (0 for a plain tensor)."""
    _, shape, offset = local_box(t)
    if not shape:
        return 0
    row = 1
    for d in t.shape[1:]:
        row *= d
    return int(offset[0]) * row
