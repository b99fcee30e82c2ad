"""The token dataset handed to the estimator: one LongTensor, rows as ``{"input_ids": LongTensor[L]}``."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset


class TokenDataset(Dataset):
    """Map-style dataset over a (rows, L) int64 tensor kept whole, so batching is one indexing operation."""

    def __init__(self, input_ids: torch.Tensor):
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be 2-D (rows, seq_len), got shape {tuple(input_ids.shape)}")
        self.input_ids = input_ids.to(torch.long).contiguous()

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def __getitem__(self, i) -> dict:
        return {"input_ids": self.input_ids[i]}

    def __getitems__(self, idx: list[int]) -> list[dict]:  # DataLoader's batched fetch
        rows = self.input_ids[torch.as_tensor(idx, dtype=torch.long)]
        return [{"input_ids": r} for r in rows]

    @property
    def seq_len(self) -> int:
        return self.input_ids.shape[1]

    def __repr__(self) -> str:
        return f"TokenDataset(rows={len(self)}, seq_len={self.seq_len})"
