"""Minibatches for the sampler: shuffled, cycled, in an order private to each chain.

The dataset is collated once into tensors (a ``TensorDataset``, a HF ``datasets.Dataset`` or any map-style torch
``Dataset``), so a minibatch is one indexing operation; the result is what the default collation of the same
rows would give.
"""

from __future__ import annotations

from typing import Any

import torch


def materialize(data: Any) -> Any:
    """Collate every row of ``data`` once: a tuple of tensors, a dict of tensors, or a tensor."""
    from torch.utils.data import TensorDataset, default_collate

    if isinstance(data, TensorDataset):
        return tuple(data.tensors)
    try:
        import datasets

        if isinstance(data, datasets.Dataset):
            cols = data.with_format("torch")[:]
            return {k: v for k, v in cols.items() if isinstance(v, torch.Tensor)}
    except ImportError:  # pragma: no cover - datasets is a dependency
        pass
    n = len(data)
    collated = default_collate([data[i] for i in range(n)])
    return tuple(collated) if isinstance(collated, list) else collated


def num_rows(data: Any) -> int:
    return len(data)


def take(collated: Any, idx: torch.Tensor) -> Any:
    if isinstance(collated, torch.Tensor):
        return collated[idx]
    if isinstance(collated, dict):
        return {k: v[idx] for k, v in collated.items()}
    return type(collated)(t[idx] for t in collated)


def to_device(batch: Any, device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return type(batch)(to_device(t, device) for t in batch)


class BatchStream:
    """Endless minibatches of ``batch_size`` rows: a fresh permutation per epoch from the chain's generator."""

    def __init__(self, collated: Any, n: int, batch_size: int, generator: torch.Generator, device="cpu"):
        self.collated, self.n, self.batch_size, self.gen, self.device = collated, n, batch_size, generator, device
        self._perm = torch.randperm(n, generator=generator)
        self._pos = 0

    def indices(self) -> torch.Tensor:
        if self._pos + self.batch_size > self.n:  # drop the ragged tail: every batch has the same size
            self._perm = torch.randperm(self.n, generator=self.gen)
            self._pos = 0
        idx = self._perm[self._pos:self._pos + self.batch_size]
        self._pos += self.batch_size
        return idx

    def __next__(self) -> Any:
        return to_device(take(self.collated, self.indices()), self.device)

    def __iter__(self):
        return self


def first_tensor(batch: Any) -> torch.Tensor:
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, dict):
        return batch["input_ids"] if "input_ids" in batch else next(iter(batch.values()))
    return batch[0]


def causal_lm_loss(model: torch.nn.Module, batch: Any) -> torch.Tensor:
    """Mean next-token cross-entropy of ``batch["input_ids"]`` (or the batch's first tensor), in fp32."""
    import torch.nn.functional as F

    ids = first_tensor(batch)
    mask = batch.get("attention_mask") if isinstance(batch, dict) else None
    out = model(input_ids=ids, attention_mask=mask) if mask is not None else model(input_ids=ids)
    logits = out.logits if hasattr(out, "logits") else out
    targets = ids[:, 1:]
    if mask is not None:
        targets = targets.masked_fill(mask[:, 1:] == 0, -100)
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                           ignore_index=-100)


class LossModule(torch.nn.Module):
    """``loss_fn(model, batch)`` as a module, so ``functional_call`` substitutes the weights for *every* use of
    them inside ``loss_fn`` (a call of the model or a direct attribute read such as ``model.w``)."""

    def __init__(self, model: torch.nn.Module, loss_fn):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch):
        return self.loss_fn(self.model, batch)
