"""The chain's Langevin noise for a shard of the parameters, equal to what the unsharded sampler draws.

The unsharded sampler draws one ``torch.randn(N)`` per step for all N sampled parameters (one flat vector, in
``named_parameters`` order) from the chain's generator. On CPU, ``randn`` of N values equals the concatenation of
draws of size C, C, ..., C, R (C a multiple of 16, the last R in [C, 2C)): the vectorised kernel transforms the
uniform stream 16 values at a time and redraws only the last 16 of a call whose size is not a multiple of 16
(``tests/sampler/test_noise.py`` checks it). So a process holding a shard draws the whole vector chunk by chunk,
keeps the slices its shard covers, and the generator ends each step where the unsharded one does: the values do
not depend on the shard size. The cost is the full draw on every rank (N normals per step, as unsharded), in
chunks of C values of memory instead of N.

Use: ``begin()`` at each step, then for each parameter in flat order ``select(start, stop)`` (its shard's global
flat range) before the sampler's ``update`` calls :meth:`fill_normal`; ``end()`` draws the rest of the vector.
"""

from __future__ import annotations

import torch

CHUNK = 1 << 20


class NoiseSlices:
    def __init__(self, generator: torch.Generator, total: int, chunk: int = CHUNK):
        if chunk % 16:
            raise ValueError("chunk must be a multiple of 16")
        self.gen, self.total, self.chunk = generator, int(total), chunk
        self.begin()

    def _bounds(self, start: int) -> int:
        """End of the chunk starting at ``start``: C values, or all the rest when less than 2C remain."""
        rest = self.total - start
        return self.total if rest < 2 * self.chunk else start + self.chunk

    def begin(self) -> None:
        self._buf, self._lo, self._hi = None, 0, 0  # the current chunk covers [lo, hi) of the flat vector
        self._sel = (0, 0)

    def _advance(self) -> None:
        lo = self._hi
        hi = self._bounds(lo)
        self._buf = torch.randn(hi - lo, generator=self.gen, dtype=torch.float32, device=self.gen.device)
        self._lo, self._hi = lo, hi

    def select(self, start: int, stop: int) -> None:
        if start < self._lo or stop > self.total or stop < start:
            raise ValueError(f"noise slices must be asked for in increasing order within [0, {self.total})")
        self._sel = (start, stop)

    def fill_normal(self, out: torch.Tensor) -> torch.Tensor:
        """Write the selected slice of this step's noise into ``out`` (flat, its size)."""
        start, stop = self._sel
        if out.numel() != stop - start:
            raise ValueError(f"noise slice of {stop - start} values for a tensor of {out.numel()}")
        flat = out.view(-1)
        pos = start
        while pos < stop:
            while self._buf is None or pos >= self._hi:
                self._advance()
            take = min(stop, self._hi) - pos
            flat[pos - start:pos - start + take].copy_(self._buf[pos - self._lo:pos - self._lo + take])
            pos += take
        return out

    def end(self) -> None:
        """Draw what is left of this step's vector, so the next step starts where the unsharded sampler's does."""
        while self._hi < self.total:
            self._advance()
        self.begin()
