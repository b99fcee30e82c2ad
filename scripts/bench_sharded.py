#!/usr/bin/env python
"""Benchmark a sharded measurement (``shard_size`` k = 2) against the replicated one (k = 1) on the same processes.

Builds a randomly initialised GPT-NeoX of about ``--hidden``² · 12 · ``--layers`` parameters (default ≈150M; random
weights: the cost of a step does not depend on them), saves it with ``save_pretrained`` (fp32 safetensors), writes
random token rows, and measures it with ``llc-service``'s worker twice on ``--processes`` processes (torchrun,
gloo on CPU): k = 1 (every process holds a full copy and runs its own chains) and k = 2 (one copy per pair of
processes, their chains one after another). Prints per k: the memory plan's total per process, the measured peak
resident memory (max over processes, ``peak_memory_mb`` of the summary row), the wall time, chain-steps per second
and λ̂, then the two runs' largest difference of draw losses (they take the same draws).

    .venv/bin/python scripts/bench_sharded.py --markdown      # the numbers in docs/large-models.md
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def build(folder: Path, hidden: int, layers: int, vocab: int, seq_len: int, rows: int) -> tuple[str, str]:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(0)
    config = GPTNeoXConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                           num_attention_heads=max(1, hidden // 64), intermediate_size=4 * hidden,
                           max_position_embeddings=max(seq_len, 128))
    model = GPTNeoXForCausalLM(config).float().eval()
    ckpt = folder / "run" / "step1"
    model.save_pretrained(ckpt, safe_serialization=True)
    ids = np.random.default_rng(0).integers(0, vocab, size=(rows, seq_len), dtype=np.int64)
    data = folder / "tokens.parquet"
    pq.write_table(pa.table({"input_ids": pa.array(list(ids), pa.list_(pa.int64()))}), data)
    return str(ckpt), str(data)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--draws", type=int, default=6)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)

    import numpy as np

    from llc_service.config import MeasureConfig, build_config
    from llc_service.sinks import read_draws
    from llc_service.worker import memory_plan as mp
    from llc_service.worker.measure import measure_checkpoint

    with tempfile.TemporaryDirectory(prefix="llc-bench-sharded-") as tmp:
        tmp = Path(tmp)
        ckpt, data = build(tmp, args.hidden, args.layers, args.vocab, args.seq_len, rows=8 * args.batch_size)
        shape = mp.read_shape(ckpt)
        rows, traces = [], {}
        for k in (1, 2):
            cfg = build_config(MeasureConfig, dict(
                device="cpu", processes=args.processes, shard_size=k, num_chains=args.processes, num_draws=args.draws,
                num_burnin=0, batch_size=args.batch_size, seq_len=args.seq_len, init_loss_batches=4, epsilon=1e-6,
                nbeta=20.0, gamma=100.0, chain_batching="off", mala_acceptance=False, progress=False,
                wandb_project=None, device_memory_gb=1000.0))
            plan = mp.plan_memory(shape, cfg, args.processes).row(k).total / 2**20
            out = tmp / f"out-k{k}"
            t0 = time.perf_counter()
            row = measure_checkpoint(ckpt, data, str(out), cfg, use_wandb=False)
            wall = time.perf_counter() - t0
            if row["status"] != "ok":
                print(f"k={k}: {row['status']}: {row.get('error')}", file=sys.stderr)
                return 1
            steps = args.processes * args.draws
            traces[k] = read_draws(str(out)).sort_values(["chain", "draw"])["loss"].to_numpy()
            rows.append((k, shape.num_params, plan, row["peak_memory_mb"], wall, steps / wall, row["llc_mean"]))
        diff = float(np.max(np.abs(traces[1] - traces[2]) / np.abs(traces[1])))
    head = ("shard_size k", "parameters", "plan MB/process", "peak RSS MB/process", "wall s", "chain-steps/s", "λ̂")
    fmt = ["{}", "{:,}", "{:,.0f}", "{:,.0f}", "{:.1f}", "{:.2f}", "{:.2f}"]
    if args.markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
    else:
        print("  ".join(head))
    for r in rows:
        cells = [f.format(v) for f, v in zip(fmt, r)]
        print("| " + " | ".join(cells) + " |" if args.markdown else "  ".join(cells))
    print(f"\n{args.processes} processes (torchrun, gloo, CPU), batch {args.batch_size} × {args.seq_len} tokens, "
          f"{args.draws} draws per chain, {args.processes} chains; largest relative difference of the draws "
          f"between k = 1 and k = 2: {diff:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
