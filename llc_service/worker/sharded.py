"""One process's share of a sharded measurement (``shard_size`` k > 1): chain groups over a ``("chain", "shard")``
mesh.

The ``world`` processes form ``world / k`` shard groups of k consecutive ranks. Each group holds ONE copy of the
model, sharded over its k processes with FSDP2 (:func:`llc_service.checkpoint.sharded_load.load_sharded`: built on
the meta device, each process reads only its own slices of the safetensors files; no process holds a full copy),
checks the weights on the shards (:func:`llc_service.worker.weights.sharded_weight_checks`), and runs its share
of the chains one after another (:func:`llc_service.estimate.sharded.run_sharded_chains`); chains are seeded by
index, so λ̂ does not depend on k or on the number of groups. The first rank of each group reports the group's
chains; the others report none. Failures are agreed on by every rank after each phase, so that one rank's refusal
never leaves the others waiting in a collective.

Refined-LLC ``components`` run one after another on the one sharded model (element masks sliced to each shard).
Not on this path (refused before anything is loaded, :func:`check_supported`): ``baseline: paired``,
``autocast_dtype``; MALA acceptance is not tracked (NaN).
"""

from __future__ import annotations

import dataclasses
import logging
import re

from llc_service.config import MeasureConfig
from llc_service.errors import UsageError
from llc_service.worker.record import CheckpointInfo
from llc_service.worker.unit import MeasureUnit

log = logging.getLogger(__name__)


def check_supported(cfg: MeasureConfig, world: int) -> None:
    """Raise :class:`UsageError` for what the sharded path cannot do, naming the field."""
    k = int(cfg.shard_size)
    if world % k:
        raise UsageError(f"shard_size={k} does not divide the {world} process(es)")
    groups = world // k
    if groups > cfg.num_chains:
        raise UsageError(f"{groups} shard groups ({world} processes / shard_size {k}) but num_chains="
                         f"{cfg.num_chains}: every group needs at least one chain")
    if cfg.batch_size % k:
        raise UsageError(f"batch_size={cfg.batch_size} must divide by shard_size={k} (each process of a shard group "
                         f"takes batch_size/shard_size rows of every minibatch)")
    for name, value, default in (("baseline", cfg.baseline, "init"), ("autocast_dtype", cfg.autocast_dtype, None)):
        if value != default:
            raise UsageError(f"{name}={value!r} is not available with shard_size > 1 in this version "
                             f"(use shard_size=1, or leave {name} at {default!r})")


class PeerFailed(RuntimeError):
    """This process was fine, another process of the measurement failed (its error is the one recorded)."""


def agree(ok: bool, what: str) -> None:
    """Every rank learns whether every rank succeeded at ``what``; the ranks that did raise too."""
    import torch
    import torch.distributed as dist

    flag = torch.tensor([1 if ok else 0], dtype=torch.int64)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    if ok and not int(flag):
        raise PeerFailed(f"another process of this measurement failed while {what} (its error is recorded)")


def lean_heap(threshold: int = 1 << 20) -> bool:
    """Have glibc return every freed block of ``threshold`` bytes or more to the system at once (``mallopt``
    ``M_MMAP_THRESHOLD``). By default glibc raises that threshold as large blocks are freed and then keeps a step's
    freed temporaries in its heap: measured on a 160M GPT-NeoX sharded over 2 CPU processes, 2,547 MB peak per process
    against 2,034 MB with it, at the same step time (docs/large-models.md). A sharded process exists to save memory,
    so it asks for this; False where the C library has no ``mallopt`` (not glibc)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(-3, int(threshold)))  # -3: M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


def run_sharded_share(unit: MeasureUnit, cfg: MeasureConfig, rank: int, world: int, device: str | None,
                      info: CheckpointInfo):
    """Load the checkpoint sharded over this rank's group, load the data, run the group's chains.

    Three phases, each closed by :func:`agree` on every rank (the same collectives in the same order whatever
    fails): fetch and validate the folder (no collective), build the sharded model (each rank its slices) and check
    its weights, load the data."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    from llc_service.bucket import inspect_checkpoint
    from llc_service.checkpoint.errors import CheckpointError
    from llc_service.checkpoint.load import attach_tokenizer, check_weight_files, fetch_checkpoint
    from llc_service.checkpoint.sharded_load import load_sharded
    from llc_service.checkpoint.validate import refuse_nonfinite
    from llc_service.data import load_token_data
    from llc_service.errors import CheckpointPending
    from llc_service.estimate.chains import resolve_device
    from llc_service.estimate.sharded import run_sharded_chains, shard_model
    from llc_service.worker.assign import chains_for_rank
    from llc_service.worker.weights import sharded_weight_checks

    if device is not None:
        cfg = dataclasses.replace(cfg, device=device)
    if not dist.is_initialized():
        raise RuntimeError("shard_size > 1 needs the processes of a torchrun launch (--processes)")
    k = int(cfg.shard_size)
    groups = world // k
    dev = resolve_device(cfg.device)
    if dev.type == "cpu":
        lean_heap()
    shard_mesh = init_device_mesh(dev.type, (groups, k), mesh_dim_names=("chain", "shard"))["shard"]

    ok, loaded, ref = False, None, unit.ref
    try:  # phase 1: the folder, local and validated, its weight headers and tokenizer (every rank alike)
        ref = ref or inspect_checkpoint(unit.checkpoint_uri, storage_options=cfg.storage_options,
                                        marker_file=cfg.marker_file)
        info.ref = dataclasses.asdict(ref)
        if ref.status != "complete":
            raise CheckpointPending(f"checkpoint {ref.uri} is incomplete ({ref.reason}); it will be measured once "
                                    f"complete")
        loaded = fetch_checkpoint(ref, storage_options=cfg.storage_options, cache_dir=cfg.cache_dir,
                                  cache_max_gb=cfg.cache_max_gb)
        check_weight_files(loaded.uri, loaded.local_dir)
        attach_tokenizer(loaded, cfg.tokenizer, cfg.storage_options, cfg.cache_dir)
        ok = True
    finally:
        if not ok and loaded is not None:
            loaded.__exit__(None, None, None)
        agree(ok, "fetching the checkpoint")

    with loaded:
        info.ref["fingerprint"] = loaded.fingerprint or ref.fingerprint
        ok = False
        try:  # phase 2: one model copy per group, sharded; each rank reads its own slices of the files
            try:
                keep = re.compile(cfg.param_filter) if cfg.param_filter else None
                load = load_sharded(loaded.local_dir, shard_mesh, shard_model, device=str(dev),
                                    frozen=None if keep is None else (lambda name: not keep.search(name)))
            except (CheckpointError, MemoryError):
                raise
            except Exception as exc:  # noqa: BLE001 - transformers raises many types; keep its message
                raise CheckpointError(ref.uri, f"transformers could not load it: {type(exc).__name__}: {exc}") \
                    from exc
            model = load.model
            if load.reason:
                log.info("%s: rank 0 read the whole checkpoint and scattered it (%s)", ref.uri, load.reason)
            # every rank of the group takes part (collective) before any of them may refuse
            nonfinite, info.weight_norm, info.weight_sketch = sharded_weight_checks(model, shard_mesh.get_group())
            if load.missing:
                raise CheckpointError(ref.uri, f"{len(load.missing)} weights the architecture needs are not in the "
                                               f"files ({', '.join(load.missing[:3])}); they would be randomly "
                                               f"initialised")
            refuse_nonfinite(ref.uri, nonfinite)
            info.model_type = model.config.model_type
            info.num_params = sum(p.numel() for p in model.parameters())  # DTensor: the global size
            ok = True
        finally:
            agree(ok, "loading the checkpoint")
        ok = False
        try:  # phase 3: the data (every rank alike)
            vocab = getattr(model.config, "vocab_size", None)
            data = load_token_data(unit.data_uri, tokenizer=loaded.tokenizer, vocab_size=vocab, seq_len=cfg.seq_len,
                                   text_column=cfg.text_column, max_rows=cfg.max_rows,
                                   storage_options=cfg.storage_options, cache_dir=cfg.cache_dir,
                                   min_rows=cfg.batch_size)
            info.data_fingerprint, info.num_rows = data.fingerprint, data.num_rows
            ok = True
        finally:
            agree(ok, "loading the data")
        group, shard = divmod(rank, k)
        chains = chains_for_rank(cfg.num_chains, group, groups)
        desc = f"{ref.run_id} step {ref.step} [group {group}, sharded over {k}]"
        if cfg.components:  # refined LLC: each component on the one sharded model, against one L(w*)
            run = _components(model, data.dataset, cfg, shard_mesh, chains, desc, shard == 0)
        else:
            run = run_sharded_chains(model, data.dataset, cfg, shard_mesh, chains, desc, report=shard == 0)
    info.device = dev.type
    return run


def _components(model, dataset, cfg, mesh, chains: list[int], desc: str, report: bool) -> list:
    """:func:`llc_service.worker.components.run_components` on the sharded path (same rows, same order)."""
    import time

    from llc_service.components import resolve_components
    from llc_service.estimate.sharded import run_sharded_chains
    from llc_service.worker.components import ComponentRun

    out, init_loss = [], None
    for comp in resolve_components(model, cfg.components):
        t0 = time.perf_counter()
        run = run_sharded_chains(model, dataset, cfg, mesh, chains, f"{desc} {comp.name}", report=report,
                                 masks=comp.masks, init_loss=init_loss)
        init_loss = run.init_loss
        out.append(ComponentRun(comp.name, run, time.perf_counter() - t0))
    return out
