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
        sq += flat.square().sum()
        for start in range(0, flat.numel(), _CHUNK):
            part = flat[start:start + _CHUNK]
            g = torch.Generator().manual_seed(zlib.crc32(name.encode()) * 1_000_003 + start)
            idx = torch.randint(0, SKETCH_SIZE, (part.numel(),), generator=g)
            sign = torch.randint(0, 2, (part.numel(),), generator=g, dtype=torch.int8).to(torch.float64) * 2 - 1
            sketch.index_add_(0, idx, part * sign)
    return float(sq.sqrt()), sketch.numpy().astype(np.float32)
