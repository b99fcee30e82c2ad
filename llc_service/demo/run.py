"""The main job on the embedded default: the whole service on one machine, no cloud account.

A tiny GPT-NeoX trains on Python standard-library source in a subprocess and writes HF checkpoints at log-spaced
steps into ``OUT/bucket/tiny-neox`` (a local folder playing the bucket). Meanwhile the watcher (local Ray, CPU,
wandb offline) measures each checkpoint as it becomes complete. When training is over and every checkpoint has an
outcome, the trajectory table is printed, the plot written, and the offline wandb runs listed for ``wandb sync``.

    python -m llc_service.demo.run --out demo-output        # what scripts/demo.sh runs
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "jobs" / "configs" / "tiny-lm.yaml"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m llc_service.demo.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="demo-output", help="folder for the bucket, data, results, wandb and plot")
    p.add_argument("--steps", type=int, default=512, help="training steps (checkpoints at log-spaced steps)")
    p.add_argument("--per-decade", type=int, default=4, help="checkpoints per factor of 10 in step")
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="measurement config (YAML)")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="sets",
                   help="override a config field, e.g. --set num_draws=100")
    p.add_argument("--interval", type=float, default=3.0, help="seconds between polls of the bucket")
    p.add_argument("--max-concurrent", type=int, default=None,
                   help="measurements at once (default: as many as the local Ray cluster has CPUs)")
    p.add_argument("--fresh", action="store_true", help="delete OUT first (otherwise a rerun measures nothing new)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import logging
    import shutil

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("urllib3", "filelock", "fsspec", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("WANDB_MODE", "offline")
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(var, "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    out = Path(args.out).resolve()
    if args.fresh and out.exists():
        shutil.rmtree(out)
    bucket, results, wandb_dir = out / "bucket" / "tiny-neox", out / "results", out / "wandb"
    for d in (bucket, results, wandb_dir):
        d.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("WANDB_DIR", str(wandb_dir))

    from llc_service.config import load_config

    cfg = load_config(args.config, args.sets)
    data = _data(out, cfg.seq_len)
    t0 = time.perf_counter()
    print(f"[demo] training a tiny GPT-NeoX for {args.steps} steps; checkpoints -> {bucket}", flush=True)
    train = subprocess.Popen([sys.executable, "-m", "llc_service.demo.train", str(bucket), "--steps",
                              str(args.steps), "--per-decade", str(args.per_decade)],
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    from llc_service.watcher.watch import watch

    try:
        code = watch(str(bucket), data, str(results), cfg, once=False, interval=args.interval, address="local",
                     max_concurrent=args.max_concurrent, until=lambda: train.poll() is not None)
    finally:
        if train.poll() is None:
            train.terminate()
            train.wait(timeout=30)
    if train.returncode:
        print(f"[demo] training exited with code {train.returncode}", file=sys.stderr)
        return train.returncode or 1

    from llc_service.report import run_report

    plot = out / "llc-trajectory.png"
    print(run_report(str(results), plot=str(plot), echo=False))
    runs = sorted(p for p in wandb_dir.rglob("offline-run-*") if p.is_dir())
    print(f"\n[demo] done in {time.perf_counter() - t0:.0f}s")
    print(f"  results (Parquet): {results}   e.g. python -c \"import llc_service as l; "
          f"print(l.read_summary('{results}'))\"")
    print(f"  plot:              {plot}")
    if runs:
        print(f"  wandb (offline):   {len(runs)} runs; upload with:  wandb sync {wandb_dir}/wandb/offline-run-*")
    return code


def _data(out: Path, seq_len: int) -> str:
    """Measurement data: stdlib-source token blocks with the demo tokenizer (the one training uses)."""
    target = out / "data" / "val.parquet"
    if not target.exists():
        from llc_service.demo import assets
        from llc_service.demo.train import write_data

        write_data(target, assets.train_tokenizer(vocab_size=512), seq_len=seq_len, max_blocks=512)
    return str(target)


if __name__ == "__main__":
    sys.exit(main())
