"""Sharded noise equals the unsharded draw, and one sampler core steps shards exactly as it steps the flat vector."""

from __future__ import annotations

import pytest
import torch

from llc_service.sampler import sgld
from llc_service.sampler.noise import NoiseSlices


def _shards(sizes: list[int], k: int) -> list[list[tuple[int, int]]]:
    """Per rank, the global flat ranges of its dim-0 shard of each parameter (as FSDP2 splits rows: ceil(n/k))."""
    out, offset = [[] for _ in range(k)], 0
    for n in sizes:
        rows = -(-n // k)
        for r in range(k):
            lo, hi = min(r * rows, n), min((r + 1) * rows, n)
            out[r].append((offset + lo, offset + hi))
        offset += n
    return out


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("chunk", [16, 64])
def test_slices_equal_one_full_draw_over_several_steps(k, chunk):
    sizes = [5, 160, 33, 1, 700, 48]  # odd sizes, a parameter smaller than k, chunks crossing parameters
    total = sum(sizes)
    ref_gen = torch.Generator().manual_seed(11)
    expected = [torch.randn(total, generator=ref_gen) for _ in range(3)]
    for ranges in _shards(sizes, k):
        noise = NoiseSlices(torch.Generator().manual_seed(11), total, chunk=chunk)
        for step in range(3):
            noise.begin()
            for lo, hi in ranges:
                noise.select(lo, hi)
                got = noise.fill_normal(torch.empty(hi - lo))
                torch.testing.assert_close(got, expected[step][lo:hi], rtol=0, atol=0)
            noise.end()


@pytest.mark.parametrize("sampler", ["sgld", "rmsprop"])
def test_sharded_steps_equal_the_flat_steps_bit_for_bit(sampler):
    """The same core (sgld.build's update) on per-parameter shards with NoiseSlices == on the flat vector."""
    from llc_service.sampler import rmsprop_sgld

    kw = dict(epsilon=1e-3, nbeta=10.0, gamma=50.0, weight_decay=0.01, bounding_box=0.5)
    build = (lambda: sgld.build(**kw)) if sampler == "sgld" else (lambda: rmsprop_sgld.build(**kw))
    sizes, k, steps = [7, 130, 64, 3], 2, 4
    total = sum(sizes)
    torch.manual_seed(0)
    w0, grads = torch.randn(total), [torch.randn(total) for _ in range(steps)]

    init, update = build()
    state = init(w0.clone(), w0.clone())
    gen = torch.Generator().manual_seed(3)
    for g in grads:
        update(state, g, gen)
    flat = state.w

    for ranges in _shards(sizes, k):
        init, update = build()
        states = [init(w0[lo:hi].clone(), w0[lo:hi].clone()) for lo, hi in ranges]
        noise = NoiseSlices(torch.Generator().manual_seed(3), total, chunk=32)
        for g in grads:
            noise.begin()
            for (lo, hi), st in zip(ranges, states):
                noise.select(lo, hi)
                update(st, g[lo:hi], noise)
            noise.end()
        for (lo, hi), st in zip(ranges, states):
            torch.testing.assert_close(st.w, flat[lo:hi], rtol=0, atol=0)
