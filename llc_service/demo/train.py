"""A tiny training run that plays the researcher's: it writes HF checkpoints into a folder as it trains.

Trains a tiny GPT-NeoX on Python's standard-library source and saves ``step<N>/`` checkpoints at log-spaced steps,
writing ``trainer_state.json`` last, as the HF Trainer does, so a watcher configured with that marker file never
reads a half-written checkpoint. Run: ``python -m llc_service.demo.train OUT_DIR --steps 512``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def log_spaced_steps(total: int, per_decade: int = 4) -> list[int]:
    """0, then about ``per_decade`` steps per factor of 10 up to ``total``."""
    import numpy as np

    raw = np.unique(np.round(np.logspace(0, np.log10(total), int(per_decade * np.log10(total)) + 1)).astype(int))
    return [0] + [int(s) for s in raw if s <= total]


def write_data(out_file: str | Path, tokenizer, seq_len: int = 64, max_blocks: int = 512) -> Path:
    """The measurement data: token blocks of stdlib text as a Parquet file with an ``input_ids`` column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from llc_service.demo import assets

    blocks = assets.token_blocks(tokenizer, seq_len=seq_len, max_blocks=max_blocks)
    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"input_ids": pa.array(blocks.tolist(), type=pa.list_(pa.int32()))}), out)
    return out


def train(out_dir: str | Path, steps: int = 512, per_decade: int = 4, seed: int = 0, lr: float = 3e-3,
          batch_size: int = 16, hidden: int = 64, layers: int = 2, delay: float = 0.0,
          tokenizer_dir: str | Path | None = None) -> list[Path]:
    import torch

    from llc_service.demo import assets

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = assets.train_tokenizer(tokenizer_dir, vocab_size=512)
    blocks = assets.token_blocks(tok, seq_len=64, max_blocks=2048, max_bytes=1_500_000)
    model = assets.tiny_model("gpt_neox", seed=seed, hidden=hidden, layers=layers)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    g = torch.Generator().manual_seed(seed)
    save_at = set(log_spaced_steps(steps, per_decade))
    written = []
    for step in range(steps + 1):
        if step in save_at:
            model.eval()
            ckpt = assets.save_checkpoint(model, out / f"step{step}", tokenizer=tok)
            (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}))  # last: marks complete
            written.append(ckpt)
            print(f"[train] wrote {ckpt}", flush=True)
            model.train()
            if delay:
                time.sleep(delay)
        if step == steps:
            break
        idx = torch.randint(0, blocks.shape[0], (batch_size,), generator=g)
        loss = model(input_ids=blocks[idx], labels=blocks[idx]).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return written


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir")
    p.add_argument("--steps", type=int, default=512)
    p.add_argument("--per-decade", type=int, default=4, help="checkpoints per factor of 10 in step")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--delay", type=float, default=0.0, help="pause after each checkpoint (seconds)")
    args = p.parse_args(argv)
    train(args.out_dir, steps=args.steps, per_decade=args.per_decade, seed=args.seed, delay=args.delay)


if __name__ == "__main__":
    main()
