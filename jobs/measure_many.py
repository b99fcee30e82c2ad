"""Entrypoint of ``jobs/measure_many.yaml``: measure a list of checkpoints, one Ray task per checkpoint.

    python jobs/measure_many.py CKPT [CKPT ...] --data DATA --out RESULTS [--config F.yaml] [--set k=v ...]
    python jobs/measure_many.py --from-file checkpoints.txt --data DATA --out RESULTS

Inside a Ray job this joins the job's cluster (RAY_ADDRESS); on a laptop it starts a local one. It prints one
line per checkpoint as it finishes and exits 0 only if every checkpoint measured ``ok``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

# run as a plain script from the repo root (the job's working_dir): make the package importable without install
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def read_checkpoints(args: list[str], from_file: str | None) -> list[str]:
    """URIs from the command line, then from the file (one per line; blank lines and # comments ignored)."""
    uris = list(args)
    if from_file:
        for line in Path(from_file).read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                uris.append(line)
    seen: set[str] = set()
    return [u for u in uris if not (u in seen or seen.add(u))]  # keep order, drop repeats


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="*", metavar="CKPT", help="checkpoint folder URIs")
    p.add_argument("--from-file", metavar="FILE", help="file with one checkpoint URI per line")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--run-id", default=None)
    p.add_argument("--config", default=None, metavar="F.yaml")
    p.add_argument("--set", action="append", default=[], dest="sets", metavar="KEY=VALUE")
    p.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS, else a local cluster)")
    p.add_argument("--max-concurrent", type=int, default=None)
    p.add_argument("--no-wandb", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from llc_service.config import load_config
    from llc_service.scheduler.ray_runner import run_measurements
    from llc_service.sinks.base import summary_line
    from llc_service.worker.unit import MeasureUnit

    cfg = load_config(args.config, args.sets)
    uris = read_checkpoints(args.checkpoints, args.from_file)
    if not uris:
        p.error("no checkpoints given (arguments or --from-file)")
    units = [MeasureUnit(uri, args.data, args.out, run_id=args.run_id, use_wandb=not args.no_wandb) for uri in uris]
    failed = 0
    for unit, row in run_measurements(units, cfg, max_concurrent=args.max_concurrent, address=args.address):
        failed += row.get("status") != "ok"
        print(summary_line(row, label=unit.checkpoint_uri), flush=True)
    print(f"{len(units) - failed}/{len(units)} checkpoints ok; results in {args.out}")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
