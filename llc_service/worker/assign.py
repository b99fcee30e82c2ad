"""Which chains a process (or a shard group of processes) runs: chains are seeded by index, never by rank, so the
split does not change the results."""

from __future__ import annotations


def chains_for_rank(num_chains: int, rank: int, world: int) -> list[int]:
    """Contiguous, as even as possible: 5 chains on 2 processes → [0, 1, 2] and [3, 4]. With shard groups, ``rank``
    is the group's index and ``world`` the number of groups."""
    base, extra = divmod(num_chains, world)
    start = rank * base + min(rank, extra)
    return list(range(start, start + base + (1 if rank < extra else 0)))
