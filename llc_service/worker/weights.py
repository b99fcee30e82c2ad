"""Cheap weight statistics stored with every measurement: ‖w*‖ and a count-sketch of w*.

The sketch hashes every weight into one of ``SKETCH_SIZE`` buckets with a random sign, both fixed by the
parameter's name and position, so ``‖sketch(a) − sketch(b)‖ ≈ ‖a − b‖`` for two checkpoints of the same
architecture (in expectation). The report uses it for "distance from the first checkpoint" without reloading
any weights.
"""

from __future__ import annotations

import zlib

import numpy as np

SKETCH_SIZE = 1024
_CHUNK = 1 << 22


def weight_stats(model) -> tuple[float, np.ndarray]:
    import torch

    sq = torch.zeros((), dtype=torch.float64)
    sketch = torch.zeros(SKETCH_SIZE, dtype=torch.float64)
    for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        flat = p.detach().reshape(-1).to("cpu", torch.float64)
        sq += _add_part(sketch, name, flat, 0, flat.numel())
    return float(sq.sqrt()), sketch.numpy().astype(np.float32)


def _add_part(sketch, name: str, flat, start: int, total: int):
    """Add elements ``[start, start + len(flat))`` of parameter ``name`` (``total`` elements in all) to ``sketch``;
    returns their sum of squares. The hash of an element depends only on its name and position, so the parts of a
    parameter held by several processes add up to the sketch of the whole."""
    import torch

    end = start + flat.numel()
    for chunk in range((start // _CHUNK) * _CHUNK, end, _CHUNK):
        n = min(_CHUNK, total - chunk)
        g = torch.Generator().manual_seed(zlib.crc32(name.encode()) * 1_000_003 + chunk)
        idx = torch.randint(0, SKETCH_SIZE, (n,), generator=g)
        sign = torch.randint(0, 2, (n,), generator=g, dtype=torch.int8).to(torch.float64) * 2 - 1
        lo, hi = max(start, chunk), min(end, chunk + n)
        sketch.index_add_(0, idx[lo - chunk:hi - chunk], flat[lo - start:hi - start] * sign[lo - chunk:hi - chunk])
    return flat.square().sum()


def sharded_weight_checks(model, group) -> tuple[list[str], float, np.ndarray]:
    """On a model sharded over the process ``group`` (FSDP2, DTensor parameters): the names of parameters holding
    NaN/inf, ‖w‖ and the sketch of the whole model, as :func:`weight_stats` gives them for the unsharded model (up
    to float64 summation order). Each process reads only its own shards; every process of ``group`` must call it
    and gets the same answer."""
    import torch
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor

    from llc_service.shards import flat_start, local_box

    first = dist.get_rank(group) == 0
    params = sorted(model.named_parameters(), key=lambda kv: kv[0])
    sq = torch.zeros((), dtype=torch.float64)
    sketch = torch.zeros(SKETCH_SIZE, dtype=torch.float64)
    bad = torch.zeros(len(params), dtype=torch.float64)
    for i, (name, p) in enumerate(params):
        if not isinstance(p, DTensor) and not first:  # replicated: counted once
            continue
        local = local_box(p.detach())[0]
        if local.numel() == 0:
            continue
        flat = local.reshape(-1).to("cpu", torch.float64)
        bad[i] = float(not bool(torch.isfinite(flat).all()))
        sq += _add_part(sketch, name, flat, flat_start(p), p.numel())
    packed = torch.cat([sq.reshape(1), sketch, bad])
    dist.all_reduce(packed, group=group)
    nonfinite = [n for (n, _), b in zip(params, packed[1 + SKETCH_SIZE:].tolist()) if b > 0]
    return nonfinite, float(packed[0].sqrt()), packed[1:1 + SKETCH_SIZE].numpy().astype(np.float32)
