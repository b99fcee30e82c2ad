"""``llc-service``: measure checkpoints' local learning coefficient, watch a bucket, submit jobs, report.

Only the standard library is imported before the arguments are parsed, so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import logging
import sys

EPILOG = """\
Configuration: every SamplerConfig/MeasureConfig field can be set in a YAML file (--config) and overridden with
--set key=value (typed: --set epsilon=1e-4 is a float). Unknown keys are errors. See docs/configuration.md and
docs/footguns.md (nβ, ε, burn-in, bf16) before comparing numbers.
Environment: RAY_ADDRESS (join a Ray cluster), WANDB_MODE (offline/online), AWS_* for S3.
"""


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="F.yaml", help="YAML file of config fields (sampler, data, output settings)")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="sets",
                   help="override one config field, typed (repeatable), e.g. --set epsilon=1e-4 --set num_chains=8")
    p.add_argument("--storage-options", metavar="JSON", default=None,
                   help='extra fsspec options for buckets, data and results, e.g. \'{"anon": true}\', or @FILE: a JSON '
                        'file only you can read, the place for credentials (never on the command line)')
    p.add_argument("--no-wandb", action="store_true", help="do not log to wandb (Parquet is always written)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llc-service",
        description="Measure the Local Learning Coefficient (LLC, λ̂) of HuggingFace checkpoints with SGLD, "
                    "one checkpoint at a time or every new checkpoint of a training run, on a laptop or a Ray "
                    "cluster. Results go to Parquet (source of truth) and wandb (dashboard).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    m = sub.add_parser("measure", help="measure one checkpoint and write its results",
                       description="Measure one checkpoint folder (local path or fsspec URI: s3://, gs://, ...) "
                                   "written by save_pretrained / the HF Trainer. Prints λ̂ ± std across chains, the "
                                   "loss at w*, chains used and time; writes RESULTS/summary and RESULTS/draws "
                                   "Parquet and a wandb run.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    m.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint folder (path or URI)")
    m.add_argument("--data", required=True, metavar="DATA",
                   help="Parquet or JSONL file/folder with an input_ids column or a text column")
    m.add_argument("--out", required=True, metavar="RESULTS", help="results folder (path or URI)")
    m.add_argument("--run-id", default=None, help="training run id (default: the checkpoint's parent folder name)")
    m.add_argument("--processes", type=int, default=None,
                   help="processes on this node (default: one per GPU, 1 on CPU); chains are split between them")
    m.add_argument("--dry-run", action="store_true",
                   help="print the memory plan (bytes per device for each shard size, from config.json and the "
                        "safetensors headers; no weights read) and exit without measuring")
    _add_config_args(m)

    w = sub.add_parser("watch", help="measure every complete new checkpoint under a source, exactly once",
                       description="Poll SOURCE for complete checkpoints not yet measured under this config, claim "
                                   "each in RESULTS (lease) and measure it on Ray (local cluster unless "
                                   "RAY_ADDRESS or --address is set). Exit codes: 0 done or stopped (SIGINT/"
                                   "SIGTERM), 2 usage error, 1 an outcome could not be recorded (results store "
                                   "down through every retry) or a store refuses access for good.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    w.add_argument("source", metavar="SOURCE", help="folder/prefix holding checkpoint folders (path or URI)")
    w.add_argument("--data", required=True, metavar="DATA")
    w.add_argument("--out", required=True, metavar="RESULTS")
    w.add_argument("--run-id", default=None, help="training run id (default: each checkpoint's parent folder name)")
    w.add_argument("--once", action="store_true",
                   help="measure what is there now and exit 0 once every checkpoint found has an outcome")
    w.add_argument("--interval", type=float, default=60.0, help="seconds between polls (default 60)")
    w.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS, else a local cluster)")
    w.add_argument("--max-concurrent", type=int, default=None, help="at most this many measurements at once")
    w.add_argument("--stop-after", type=float, default=None,
                   help="exit after this many seconds (for demos and tests)")
    w.add_argument("--pending-timeout", type=float, default=3600.0,
                   help="seconds a checkpoint may stay pending with unchanged files before it gets a failed row "
                        "naming what is missing (it is still measured if it completes later; 0: wait forever)")
    _add_config_args(w)

    s = sub.add_parser("submit", help="submit a job spec from jobs/ to a Ray cluster and follow it",
                       description="Submit JOB.yaml through Ray's job API. The submission id is derived from the "
                                   "job's content, so submitting the same job twice runs it once. Follows the logs "
                                   "and exits with the job's outcome (0 = succeeded).")
    s.add_argument("job", metavar="JOB.yaml")
    s.add_argument("--address", default=None, help="Ray dashboard address, e.g. http://HEAD:8265 "
                                                   "(default: RAY_ADDRESS)")
    s.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="sets",
                   help="override a field of the job spec (repeatable)")
    s.add_argument("--no-follow", action="store_true", help="return after submitting")

    c = sub.add_parser("calibrate", help="sweep ε (and nβ, γ) on one checkpoint and recommend a setting",
                       description="Run a short measurement (the config's chains, draws, seeds and data) at every grid "
                                   "point and pick a setting with an explicit rule: within each (nβ, γ), among the ε "
                                   "whose chains do not diverge, are stationary in their second half, have R̂ ≤ 1.1 "
                                   "and λ̂ > 0: where MALA acceptance is informative (≥ 0.9 at the smallest ε: small "
                                   "full-batch models) the largest ε with acceptance ≥ 0.9; otherwise the largest ε "
                                   "whose λ̂ agrees within Monte-Carlo error (or 5 %) with the next smaller ε (the "
                                   "plateau). Default grid: ε × 10^(k/2), k = -4..4, "
                                   "around the config's ε; nβ and γ from the config. Writes OUT/calibration.parquet, "
                                   "OUT/calibration.png and OUT/recommended.yaml (for measure/watch --config). "
                                   "Exit 0 with a recommendation, 1 without (the reason says what to try), 2 usage "
                                   "error. See docs/calibration.md.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint folder (path or URI)")
    c.add_argument("--data", required=True, metavar="DATA")
    c.add_argument("--out", required=True, metavar="DIR", help="folder for the calibration files (path or URI)")
    c.add_argument("--grid", metavar="AXIS=V1,V2,...", action="append", default=[],
                   help="replace one grid axis (epsilon, nbeta or gamma), e.g. --grid epsilon=1e-5,3e-5,1e-4 "
                        "(repeatable)")
    c.add_argument("--processes", type=int, default=1, help="grid points measured in parallel on this machine")
    _add_config_args(c)

    r = sub.add_parser("report", help="print the λ̂ trajectory per run and plot it",
                       description="Read RESULTS/summary and print λ̂ ± std, loss at w*, weight norm and distance "
                                   "from the first checkpoint against training step, per run and config; mark "
                                   "stage boundaries (critical points of smoothed λ̂ against log step).")
    r.add_argument("results", metavar="RESULTS")
    r.add_argument("--run-id", default=None)
    r.add_argument("--plot", metavar="FILE.png", default=None, help="write the trajectory plot here")
    r.add_argument("--wandb-project", default=None, help="also (re)build the wandb trajectory run in this project")
    r.add_argument("--storage-options", metavar="JSON", default=None)
    return parser


def _setup_logging(args) -> None:
    level = logging.DEBUG if getattr(args, "verbose", False) else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("urllib3", "botocore", "s3fs", "fsspec", "filelock", "aiobotocore", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _load_cfg(args, extra_sets: list[str] | None = None):
    from llc_service.config import load_config
    from llc_service.credentials import cli_storage_options  # refuses credentials on the command line

    opts = cli_storage_options(args)
    sets = list(args.sets) + list(extra_sets or [])
    cfg = load_config(args.config, sets)
    if opts:
        cfg.storage_options = {**cfg.storage_options, **opts}
    if args.quiet:
        cfg.progress = False
    return cfg


def cmd_measure(args) -> int:
    extra = [f"processes={args.processes}"] if args.processes else []
    cfg = _load_cfg(args, extra)
    if args.dry_run:
        return _dry_run(args.checkpoint, cfg)
    from llc_service.sinks.base import summary_line
    from llc_service.worker.measure import measure_checkpoint

    row = measure_checkpoint(args.checkpoint, args.data, args.out, cfg, run_id=args.run_id,
                             use_wandb=not args.no_wandb)
    for one in row.get("component_rows") or [row]:  # refined LLC: one line per component
        print(summary_line(one))
    print(f"results: {args.out}")
    return 0 if row.get("status") == "ok" else 1


def _dry_run(checkpoint: str, cfg) -> int:
    from llc_service.worker.distributed import resolve_processes
    from llc_service.worker.memory_plan import plan_memory, read_shape, refusal

    plan = plan_memory(read_shape(checkpoint, cfg.storage_options), cfg, resolve_processes(cfg))
    print(plan.table())
    print(f"shard_size: {plan.chosen}" if plan.chosen is not None else refusal(plan))
    return 0


def cmd_watch(args) -> int:
    cfg = _load_cfg(args)
    from llc_service.watcher.watch import watch

    return watch(args.source, args.data, args.out, cfg, run_id=args.run_id, once=args.once,
                 interval=args.interval, address=args.address, use_wandb=not args.no_wandb,
                 max_concurrent=args.max_concurrent, stop_after=args.stop_after,
                 pending_timeout=args.pending_timeout or None)


def cmd_submit(args) -> int:
    import os

    from llc_service.scheduler.submit import submit_job

    address = args.address or os.environ.get("RAY_ADDRESS")
    if not address:
        print("llc-service submit: give --address http://HEAD:8265 or set RAY_ADDRESS", file=sys.stderr)
        return 2
    return submit_job(args.job, address, sets=args.sets, follow=not args.no_follow)


def cmd_report(args) -> int:
    from llc_service.credentials import cli_storage_options
    from llc_service.report import run_report

    opts = cli_storage_options(args)
    text = run_report(args.results, run_id=args.run_id, plot=args.plot, storage_options=opts,
                      wandb_project=args.wandb_project, echo=False)
    if text:
        print(text)
    return 0


def cmd_calibrate(args) -> int:
    cfg = _load_cfg(args)
    from llc_service.calibration.command import run
    from llc_service.calibration.grid import parse_grid

    return run(args.checkpoint, args.data, args.out, cfg, parse_grid(args.grid), processes=max(args.processes, 1))


def main(argv: list[str] | None = None) -> int:
    from llc_service.console import usage_error
    from llc_service.errors import UsageError

    args = build_parser().parse_args(argv)
    _setup_logging(args)
    handler = {"measure": cmd_measure, "watch": cmd_watch, "submit": cmd_submit, "report": cmd_report,
               "calibrate": cmd_calibrate}[args.command]
    try:
        return handler(args)
    except UsageError as exc:  # a refused request: one clear line, no traceback, nothing written
        return usage_error(args.command, str(exc))


if __name__ == "__main__":
    sys.exit(main())
