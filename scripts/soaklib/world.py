"""The soak's world: a moto S3 server behind the fault proxy, a bucket, tiny real checkpoints and token data, the
environment and arguments of the watchers.

The checkpoint writer (the "training job") and the soak's own checks talk to moto directly; only the service
(watchers and Ray workers) goes through the proxy, so only the service sees faults.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from soaklib.fault_proxy import FaultPolicy, FaultProxy

REPO = Path(__file__).resolve().parents[2]
BUCKET = "llc-soak"
SOURCE = f"s3://{BUCKET}/ckpts"
RUN = "soak-run"
DATA = f"s3://{BUCKET}/data/tokens.parquet"
RESULTS = f"s3://{BUCKET}/results"
CLEAN = f"s3://{BUCKET}/clean-results"
S3_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "NO_PROXY", "no_proxy")

# ~1-2 s per measurement on one warm CPU worker (the watcher tests' TINY config); λ̂ is a real number
MEASURE = dict(num_chains=2, num_draws=20, num_burnin=0, batch_size=8, seq_len=32, init_loss_batches=4,
               epsilon=1e-4, nbeta=10.0, gamma=100.0, seed=0, progress=False, device="cpu", wandb_project=None,
               cpus_per_measurement=1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env(workdir: Path) -> dict:
    """Environment of the Ray head (hence its workers) and of the watchers: this repo's package, offline hub and
    wandb, dummy S3 credentials (never on a command line), loopback only."""
    env = dict(os.environ)
    env.update(PYTHONPATH=os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
               HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(workdir / "hf"),
               WANDB_MODE="offline", WANDB_SILENT="true", WANDB_DIR=str(workdir), TOKENIZERS_PARALLELISM="false",
               PYTHONUNBUFFERED="1", AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_DEFAULT_REGION="us-east-1", NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "RAY_ADDRESS"):
        env.pop(var, None)
    return env


class S3World:
    """moto on a free loopback port, the fault proxy in front of it, and the bucket."""

    def __init__(self, fault_rate: float, outage_every: float, outage_seconds: float, seed: int):
        self.policy = FaultPolicy(rate=fault_rate, outage_every=outage_every, outage_seconds=outage_seconds,
                                  seed=seed)
        self.server = None
        self.proxy: FaultProxy | None = None

    def __enter__(self):
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        port = _free_port()
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self.server.start()
        self.endpoint_url = f"http://127.0.0.1:{port}"
        # no region_name here: moto then refuses bucket creation (AWS_DEFAULT_REGION gives the region)
        self.direct_options = {"client_kwargs": {"endpoint_url": self.endpoint_url}}
        try:
            self.proxy = FaultProxy(port, self.policy).start()
            self.fs().mkdir(BUCKET)
        except BaseException:
            self.__exit__()
            raise
        return self

    def fs(self):
        import s3fs

        return s3fs.S3FileSystem(skip_instance_cache=True, **self.direct_options)

    def __exit__(self, *exc):
        if self.proxy is not None:
            self.proxy.stop()
        if self.server is not None:
            self.server.stop()


@dataclass
class Checkpoint:
    local: Path
    uri: str
    step: int


def prepare(s3: S3World, workdir: Path, n: int, seed: int) -> list[Checkpoint]:
    """Token data uploaded to DATA; ``n`` tiny checkpoints saved locally (distinct weights: seed + index)."""
    from llc_service.demo import assets
    from llc_service.demo.train import write_data

    tok = assets.train_tokenizer(vocab_size=512, max_bytes=200_000)
    data = write_data(workdir / "tokens.parquet", tok, seq_len=MEASURE["seq_len"], max_blocks=64)
    s3.fs().put_file(str(data), DATA.removeprefix("s3://"))
    out = []
    for i in range(n):
        step = 10 * (i + 1)
        local = workdir / "ckpts" / f"step{step}"
        model = assets.tiny_model("gpt_neox", seed=seed * 10_000 + i, vocab_size=512, hidden=32, layers=2, heads=2)
        assets.save_checkpoint(model, local, tokenizer=tok)
        out.append(Checkpoint(local, f"{SOURCE}/{RUN}/step{step}", step))
    return out


def upload_checkpoint(s3: S3World, ckpt: Checkpoint) -> None:
    """File by file, weights last, as a training job would: watchers may see it half-written (pending)."""
    fs = s3.fs()
    files = sorted((f for f in ckpt.local.iterdir() if f.is_file()), key=lambda f: (f.suffix == ".safetensors", f.name))
    for f in files:
        fs.put_file(str(f), f"{ckpt.uri.removeprefix('s3://')}/{f.name}")


def watch_args(endpoint_url: str, results: str, address: str, args) -> list[str]:
    import json

    sets = {**MEASURE, "max_retries": args.max_retries, "lease_seconds": args.lease}
    out = ["watch", SOURCE, "--data", DATA, "--out", results, "--interval", str(args.interval), "--address", address,
           *(["--max-concurrent", str(args.max_concurrent)] if args.max_concurrent else []),
           "--no-wandb", "-q", "--storage-options", json.dumps({"client_kwargs": {"endpoint_url": endpoint_url}})]
    for k, v in sets.items():
        out += ["--set", f"{k}={'null' if v is None else v}"]
    return out


def all_final(s3: S3World, uris: list[str], max_retries: int) -> bool:
    """Has every checkpoint a final row (ok, diverged, permanent failure, or transient retries exhausted)?"""
    from llc_service.sinks import read_summary

    try:
        summary = read_summary(RESULTS, storage_options=s3.direct_options)
    except Exception as exc:  # noqa: BLE001 - not there yet
        print(f"soak: reading results failed ({exc})", file=sys.stderr)
        return False
    final = set()
    for rec in summary.to_dict("records"):
        if rec["status"] in ("ok", "diverged") or rec["error_kind"] == "permanent" or \
                int(rec["attempt"] or 1) >= 1 + max_retries:
            final.add(str(rec["checkpoint_uri"]).rstrip("/"))
    return all(u in final for u in uris)


def clean_run(s3: S3World, ckpts: list[Checkpoint], args) -> None:
    """The reference: each checkpoint measured once in this process (the code a Ray task runs), straight to moto,
    no faults, no kills, one torch thread like a Ray worker, into CLEAN."""
    import torch

    from llc_service.config import MeasureConfig, build_config
    from llc_service.worker.measure import measure_checkpoint

    torch.set_num_threads(1)
    cfg = build_config(MeasureConfig, {**MEASURE, "max_retries": args.max_retries, "lease_seconds": args.lease,
                                       "storage_options": s3.direct_options})
    for ckpt in ckpts:
        measure_checkpoint(ckpt.uri, DATA, CLEAN, cfg, use_wandb=False)
