"""Seeds derived from (seed, chain, stream), never from a process rank or a shared global RNG.

A chain's noise and data order depend only on its own index, so its result is the same whichever process runs
it and whichever other chains share that process.
"""

from __future__ import annotations

import numpy as np

NOISE, DATA, INIT = 0, 1, 2


def derive_seed(seed: int, chain: int, stream: int) -> int:
    return int(np.random.SeedSequence([seed, chain, stream, 0x11C]).generate_state(1, dtype=np.uint64)[0] >> 1)


def generator(seed: int, chain: int, stream: int, device="cpu"):
    import torch

    return torch.Generator(device=device).manual_seed(derive_seed(seed, chain, stream))
