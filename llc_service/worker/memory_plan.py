"""A memory plan before any work: bytes per device for every possible shard size, from headers alone.

Nothing here reads a weight. ``config.json`` gives the shape (hidden size, layers, heads, vocabulary) and the
safetensors headers (8 + n bytes per file, the same range reads the bucket listing does) give every tensor's
size and dtype. :func:`plan_memory` turns them and the config into a table, one row per shard size ``k`` (the
processes sharing one copy of the model), each with its bytes per device by category:

=============  ==================================================================================================
category       bytes per process
=============  ==================================================================================================
``loaded``     k = 1 only: the fp32 model ``from_pretrained`` returns, kept alive while the chains run: 4·P
``weights``    w, the sampled weights, fp32: 4·S/k
``grad``       their gradient, fp32: 4·S/k
``anchor``     w*: 4·S/k (the replicated path copies it in fp32); sharded: in the checkpoint's dtype when that is
               bf16/fp16 (lossless), else fp32
``scratch``    the sampler's one work buffer (drift, then noise), fp32: 4·S/k
``rmsprop``    RMSProp-SGLD's second moment V, fp32: 4·S/k (0 for plain SGLD)
``frozen``     parameters ``param_filter`` leaves out: 4·F (k = 1, they live in the fp32 model) or in the
               checkpoint's dtype /k (sharded; FSDP2 casts them to fp32 when it gathers a layer); no gradient, no
               sampler state
``gathered``   sharded only: FSDP2 all-gathers one layer at a time, with one prefetched: 2·4·(largest layer)
``activations``  ACT_BYTES_PER_HIDDEN·b·s·h·L  +  ATTN_BYTES·b·heads·s²·L  +  LOGIT_BYTES·b·s·V
               with b = batch_size/k rows per process, s = seq_len, h = hidden, L = layers, V = vocabulary
``runtime``    WORKSPACE_BYTES (data, batches, traces) plus, on CPU, RUNTIME_CPU_BYTES of interpreter, torch and
               transformers (measured); on CUDA the context is outside ``max_allocated`` (the margin covers it)
=============  ==================================================================================================

S = sampled parameters, F = frozen ones, P = S + F. The constants were calibrated against measured peaks on
CPU (``tests/worker/test_memory_plan.py`` checks the plan against a measured peak; see docs/large-models.md).
The plan assumes one chain at a time per process (``chain_batching: vmap`` batches the chains of small models;
there the state is per chain). A shard size fits when its total is at most ``(1 - SAFETY_MARGIN)`` of the
memory of one device; ``shard_size: auto`` picks the smallest that fits among those dividing the processes.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import re
from dataclasses import dataclass, field

from llc_service.errors import PermanentError

log = logging.getLogger(__name__)

ACT_BYTES_PER_HIDDEN = 96
"""Activation bytes per (row, token, hidden unit, layer) of an fp32 forward+backward (calibrated on GPT-NeoX on
CPU; Korthikanti et al. 2022 count 34 for 16-bit tensors, ~68 in fp32, plus what the eager kernels keep)."""
ATTN_BYTES = 12
"""Bytes per (row, head, query, key, layer): scores, probabilities and their gradient, fp32."""
LOGIT_BYTES = 16
"""Bytes per (row, token, vocabulary entry): logits, their log-softmax and its gradient, fp32 (+ upcasts)."""
RUNTIME_CPU_BYTES = 640 * 2**20
"""Resident memory of a measuring process before any model (Python, torch, transformers, pyarrow), CPU."""
WORKSPACE_BYTES = 64 * 2**20
"""What a measurement holds besides the model and activations (data, batches, traces, allocator slack)."""
SAFETY_MARGIN = 0.15
"""A shard size fits when the plan needs at most 85% of the device's memory (allocator slack, fragmentation)."""

DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
               "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
_LOSSLESS_ANCHOR = ("BF16", "F16", "F32")

CATEGORIES = ("loaded", "weights", "grad", "anchor", "scratch", "rmsprop", "frozen", "gathered", "activations",
              "runtime")


class MemoryPlanError(PermanentError):
    """No shard size fits the device memory: the message gives the numbers and what to change."""


@dataclass
class ModelShape:
    """What the plan needs of a checkpoint, from ``config.json`` and the safetensors headers."""

    tensors: dict[str, tuple[int, str]]
    """tensor name -> (elements, safetensors dtype)"""
    hidden: int
    layers: int
    heads: int
    vocab: int
    model_type: str = ""

    @property
    def num_params(self) -> int:
        return sum(n for n, _ in self.tensors.values())

    @property
    def dtype(self) -> str:
        """The dtype holding most parameters (``F32``, ``BF16``, ...)."""
        by: dict[str, int] = {}
        for n, dt in self.tensors.values():
            by[dt] = by.get(dt, 0) + n
        return max(by, key=by.get) if by else "F32"

    def largest_layer(self) -> int:
        """Elements of the largest FSDP unit: one transformer block (``...layers.<i>.`` / ``...h.<i>.``), or the
        largest tensor outside the blocks (the embedding)."""
        blocks: dict[str, int] = {}
        for name, (n, _) in self.tensors.items():
            m = re.search(r"^(.*?\.(?:layers|h|layer|blocks)\.\d+)\.", name)
            key = m.group(1) if m else name
            blocks[key] = blocks.get(key, 0) + n
        return max(blocks.values(), default=0)


@dataclass
class PlanRow:
    k: int
    bytes: dict[str, int]
    fits: bool

    @property
    def total(self) -> int:
        return sum(self.bytes.values())


@dataclass
class MemoryPlan:
    shape: ModelShape
    sampled: int
    frozen: int
    processes: int
    available: int
    """Bytes of one device (or, on CPU, of the host divided by the processes)."""
    device: str
    rows: list[PlanRow] = field(default_factory=list)
    chosen: int | None = None

    def row(self, k: int) -> PlanRow:
        return next(r for r in self.rows if r.k == k)

    def table(self) -> str:
        """The plan as a fixed-width table (``--dry-run`` prints it, every measurement logs it)."""
        mb = 2**20
        head = ["k", *CATEGORIES, "total", "fits"]
        lines = [f"memory plan: {self.shape.model_type or 'model'} {self.shape.num_params:,} parameters "
                 f"({self.sampled:,} sampled, {self.frozen:,} frozen; checkpoint dtype {self.shape.dtype}), "
                 f"{self.processes} process(es) on {self.device}, {self.available / mb:,.0f} MB per device, "
                 f"fits = at most {1 - SAFETY_MARGIN:.0%} of it; MB per process:",
                 "  ".join(f"{h:>11}" for h in head)]
        for r in self.rows:
            cells = [str(r.k), *(f"{r.bytes[c] / mb:,.1f}" for c in CATEGORIES), f"{r.total / mb:,.1f}",
                     ("yes" if r.fits else "no") + (" <-" if r.k == self.chosen else "")]
            lines.append("  ".join(f"{c:>11}" for c in cells))
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# reading the shape


def read_shape(uri: str, storage_options: dict | None = None) -> ModelShape:
    """``config.json`` plus every safetensors header of the checkpoint folder ``uri`` (local path or fsspec URI);
    reads a few KB per file, never the weights."""
    from llc_service.bucket.inspect import CONFIG, INDEX, SINGLE
    from llc_service.checkpoint.errors import CheckpointError
    from llc_service.storage import open_fs

    fs, path = open_fs(uri, storage_options)
    try:
        config = json.loads(fs.cat_file(posixpath.join(path, CONFIG)))
    except FileNotFoundError:
        raise CheckpointError(uri, f"no {CONFIG}") from None
    if fs.exists(posixpath.join(path, INDEX)):
        index = json.loads(fs.cat_file(posixpath.join(path, INDEX)))
        files = sorted(set(index.get("weight_map", {}).values()))
    else:
        files = [SINGLE]
    tensors: dict[str, tuple[int, str]] = {}
    for name in files:
        tensors.update(_header(fs, posixpath.join(path, name), uri))
    text = config.get("text_config", config)  # multimodal configs nest the language model's
    hidden = _first(text, "hidden_size", "n_embd", "d_model")
    layers = _first(text, "num_hidden_layers", "n_layer", "num_layers")
    heads = _first(text, "num_attention_heads", "n_head", "num_heads")
    vocab = _first(text, "vocab_size")
    return ModelShape(tensors, hidden, layers, heads, vocab, str(config.get("model_type", "")))


def _first(cfg: dict, *keys: str) -> int:
    for k in keys:
        if isinstance(cfg.get(k), int):
            return cfg[k]
    return 0


def _header(fs, path: str, uri: str) -> dict[str, tuple[int, str]]:
    from llc_service.checkpoint.errors import CheckpointError

    try:
        n = int.from_bytes(fs.cat_file(path, start=0, end=8), "little")
        header = json.loads(fs.cat_file(path, start=8, end=8 + n))
    except (FileNotFoundError, ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(uri, f"cannot read the safetensors header of {posixpath.basename(path)}: {e}") from e
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        numel = 1
        for d in entry["shape"]:
            numel *= int(d)
        out[name] = (numel, str(entry["dtype"]).upper())
    return out


# ---------------------------------------------------------------------------------------------------------------
# the plan


def available_bytes(cfg, processes: int) -> tuple[int, str]:
    """``device_memory_gb`` if set; else the GPU's memory, or on CPU the host's available memory / processes."""
    device = _device_type(cfg.device)
    if cfg.device_memory_gb is not None:
        return int(cfg.device_memory_gb * 2**30), device
    if device == "cuda":
        import torch

        index = int(cfg.device.split(":")[1]) if ":" in cfg.device else 0
        return int(torch.cuda.get_device_properties(index).total_memory), device
    return _host_available() // max(processes, 1), device


def _device_type(name: str) -> str:
    if name.startswith("cuda"):
        return "cuda"
    if name == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cpu"


def _host_available() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def shard_sizes(processes: int) -> list[int]:
    """Every k dividing the processes (k = 1 always)."""
    return [k for k in range(1, processes + 1) if processes % k == 0]


def plan_bytes(shape: ModelShape, sampled_names: set[str], k: int, *, sampler: str, batch_size: int, seq_len: int,
               device: str) -> dict[str, int]:
    """Bytes per process at shard size ``k`` by category (see the module docstring)."""
    sampled = sum(n for name, (n, _) in shape.tensors.items() if name in sampled_names)
    total = shape.num_params
    frozen = total - sampled
    ckpt_bytes = DTYPE_BYTES.get(shape.dtype, 4)
    rows = -(-batch_size // k)  # the minibatch is split over the k ranks of a group
    out = dict.fromkeys(CATEGORIES, 0)
    out["weights"] = out["grad"] = out["scratch"] = -(-4 * sampled // k)
    out["rmsprop"] = out["weights"] if sampler == "rmsprop_sgld" else 0
    if k == 1:  # today's replicated path: the loaded fp32 model stays alive, w* is an fp32 copy
        out["loaded"] = 4 * total
        out["anchor"] = 4 * sampled
        out["frozen"] = 4 * frozen  # the working copy's frozen parameters (the loaded model's are in "loaded")
    else:
        anchor_bytes = ckpt_bytes if shape.dtype in _LOSSLESS_ANCHOR else 4
        out["anchor"] = -(-anchor_bytes * sampled // k)
        out["frozen"] = -(-ckpt_bytes * frozen // k)  # kept in the files' bf16/fp16, else fp32
        out["gathered"] = 2 * 4 * shape.largest_layer()
    b, s, h, L = rows, seq_len, shape.hidden, shape.layers
    out["activations"] = (ACT_BYTES_PER_HIDDEN * b * s * h * L + ATTN_BYTES * b * shape.heads * s * s * L
                          + LOGIT_BYTES * b * s * shape.vocab)
    out["runtime"] = WORKSPACE_BYTES + (RUNTIME_CPU_BYTES if device == "cpu" else 0)
    return out


def sampled_tensor_names(shape: ModelShape, param_filter: str | None) -> set[str]:
    """The checkpoint tensors ``param_filter`` selects (matched on the checkpoint's names, which equal the model's
    parameter names for the architectures transformers loads without renames)."""
    if not param_filter:
        return set(shape.tensors)
    pattern = re.compile(param_filter)
    return {name for name in shape.tensors if pattern.search(name)}


def plan_memory(shape: ModelShape, cfg, processes: int) -> MemoryPlan:
    """The plan for ``processes`` processes under ``cfg`` (a ``MeasureConfig``); ``chosen`` is the shard size to
    use (``cfg.shard_size``, or the smallest that fits under ``auto``), None when nothing fits under ``auto``."""
    available, device = available_bytes(cfg, processes)
    names = sampled_tensor_names(shape, cfg.param_filter)
    sampled = sum(n for name, (n, _) in shape.tensors.items() if name in names)
    plan = MemoryPlan(shape, sampled, shape.num_params - sampled, processes, available, device)
    budget = available * (1 - SAFETY_MARGIN)
    for k in shard_sizes(processes):
        b = plan_bytes(shape, names, k, sampler=cfg.sampler, batch_size=cfg.batch_size, seq_len=cfg.seq_len,
                       device=device)
        plan.rows.append(PlanRow(k, b, sum(b.values()) <= budget))
    if cfg.shard_size == "auto":
        plan.chosen = next((r.k for r in plan.rows if r.fits), None)
    else:
        plan.chosen = int(cfg.shard_size)
    return plan


def refusal(plan: MemoryPlan) -> str:
    """Why nothing fits, with the numbers and what to change."""
    best = plan.rows[-1]
    return (f"the model does not fit: even shard_size={best.k} (the largest possible with {plan.processes} "
            f"process(es)) needs {_mb(best.total)} per device, and {_mb(plan.available)} are available "
            f"({1 - SAFETY_MARGIN:.0%} usable). Use more processes (--processes; shard_size must divide them), "
            f"a smaller batch_size or seq_len, a param_filter, or a device with more memory "
            f"(device_memory_gb states it when the default is wrong). Run with --dry-run to see the plan.")


def _mb(n: float) -> str:
    return f"{n / 2**20:,.0f} MB"


def peak_memory_mb(device: str | None = None) -> float:
    """This process's peak so far: CUDA max allocated on a GPU, else the peak resident set (``ru_maxrss``)."""
    if device and device.startswith("cuda"):
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KB on Linux


def plan_shard_size(unit, cfg, processes: int):
    """``cfg`` with ``shard_size`` resolved to an integer by the plan of ``unit``'s checkpoint (logged).

    Raises :class:`MemoryPlanError` when nothing fits. A checkpoint whose headers cannot be read is left to the
    loader (which tells pending from broken): the plan is skipped and ``auto`` means 1.
    """
    import dataclasses

    if cfg.shard_size != "auto" and processes % int(cfg.shard_size):
        raise MemoryPlanError(f"shard_size={cfg.shard_size} does not divide the {processes} process(es)")
    try:
        shape = read_shape(unit.checkpoint_uri, cfg.storage_options)
    except Exception as exc:  # noqa: BLE001 - the loader reports what is wrong with the checkpoint, and how
        log.info("no memory plan for %s (%s: %s)", unit.checkpoint_uri, type(exc).__name__, exc)
        k = 1 if cfg.shard_size == "auto" else int(cfg.shard_size)
    else:
        plan = plan_memory(shape, cfg, processes)
        log.info("%s\n%s", unit.checkpoint_uri, plan.table())
        if plan.chosen is None:
            raise MemoryPlanError(refusal(plan))
        k = plan.chosen
        if not plan.row(k).fits:
            log.warning("shard_size=%d does not fit the memory plan (%s needed per device, %s available); "
                        "measuring anyway as asked", k, _mb(plan.row(k).total), _mb(plan.available))
    return dataclasses.replace(cfg, shard_size=k)
