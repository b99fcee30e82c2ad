"""One typed configuration object, passed explicitly.

``SamplerConfig`` holds what the estimator needs (the Python API). ``MeasureConfig`` extends it, flat, with the
data, output and execution settings of a checkpoint measurement, so one YAML file and ``--set key=value``
address every field by its plain name. Nothing here reads the environment.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field, fields
from typing import Any

SAMPLERS = ("sgld", "rmsprop_sgld")
CHAIN_BATCHING = ("auto", "off", "vmap")


@dataclass
class SamplerConfig:
    """Settings of one LLC estimate. See ``docs/footguns.md`` before changing ``nbeta`` or ``epsilon``.

    SGLD step (Lau et al. 2023, the ``devinterp`` convention)::

        w <- w - (epsilon/2) * (nbeta * grad L_m(w) + gamma * (w - w*) + weight_decay * w) + N(0, epsilon I)
    """

    epsilon: float = 1e-4
    """SGLD step size ε."""
    nbeta: float = 30.0
    """Inverse temperature times sample size, nβ. λ̂ values at different nβ are not comparable."""
    gamma: float = 100.0
    """Localization strength γ of the Gaussian prior centred at w*."""
    num_chains: int = 4
    num_draws: int = 200
    """Draws recorded per chain (after burn-in)."""
    num_burnin: int = 0
    """SGLD steps taken before the first draw; excluded from the estimate."""
    num_steps_bw_draws: int = 1
    """SGLD steps per draw (thinning); every step costs a forward+backward."""
    batch_size: int = 32
    sampler: str = "sgld"
    """"sgld" or "rmsprop_sgld" (RMSProp-preconditioned SGLD)."""
    seed: int = 0
    rmsprop_alpha: float = 0.99
    rmsprop_eps: float = 0.1
    weight_decay: float = 0.0
    bounding_box: float | None = None
    """If set, each weight is clamped to [w* - box, w* + box] after every step."""
    param_filter: str | None = None
    """Regex on parameter names: only matching parameters move (weight-restricted LLC); None = all."""
    init_loss_batches: int = 16
    """Batches averaged for the loss at w* (never fewer than 4)."""
    device: str = "auto"
    """"auto" (CUDA if available), "cpu", "cuda", "cuda:N"."""
    autocast_dtype: str | None = None
    """"bf16" to autocast the forward on CUDA; weights and sampler state stay fp32."""
    chain_batching: str = "auto"
    """"vmap" runs all chains of a process through one batched forward (small models); "off" one by one;
    "auto" picks vmap for models under 2M parameters on CPU."""
    progress: bool | None = None
    """Progress bar: None = only when stderr is a TTY."""
    noise_scale: float = 1.0
    """Multiplies the Langevin noise. Keep 1; 0 turns SGLD into SGD (a diagnostic), other values are not SGLD."""

    def validate(self) -> None:
        """Raise ``ValueError`` naming the offending field; called before any work."""
        _check(self, "epsilon", self.epsilon > 0 and math.isfinite(self.epsilon), "must be a finite number > 0")
        _check(self, "nbeta", self.nbeta > 0 and math.isfinite(self.nbeta), "must be a finite number > 0")
        _check(self, "gamma", self.gamma >= 0 and math.isfinite(self.gamma), "must be a finite number >= 0")
        _check(self, "num_chains", self.num_chains >= 1, "must be >= 1")
        _check(self, "num_draws", self.num_draws >= 1, "must be >= 1")
        _check(self, "num_burnin", self.num_burnin >= 0, "must be >= 0")
        _check(self, "num_steps_bw_draws", self.num_steps_bw_draws >= 1, "must be >= 1")
        _check(self, "batch_size", self.batch_size >= 1, "must be >= 1")
        _check(self, "sampler", self.sampler in SAMPLERS, f"must be one of {SAMPLERS}")
        _check(self, "rmsprop_alpha", 0 <= self.rmsprop_alpha <= 1, "must be in [0, 1] (1 freezes V at 0)")
        _check(self, "rmsprop_eps", self.rmsprop_eps > 0, "must be > 0")
        _check(self, "weight_decay", self.weight_decay >= 0, "must be >= 0")
        _check(self, "bounding_box", self.bounding_box is None or self.bounding_box > 0, "must be > 0 or null")
        _check(self, "init_loss_batches", self.init_loss_batches >= 4, "must be >= 4")
        _check(self, "autocast_dtype", self.autocast_dtype in (None, "bf16", "fp16"), "must be null, bf16 or fp16")
        _check(self, "noise_scale", self.noise_scale >= 0 and math.isfinite(self.noise_scale), "must be >= 0")
        _check(self, "chain_batching", self.chain_batching in CHAIN_BATCHING, f"must be one of {CHAIN_BATCHING}")
        _check(
            self,
            "device",
            self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
            "must be auto, cpu, cuda or cuda:N",
        )


@dataclass
class MeasureConfig(SamplerConfig):
    """Everything a checkpoint measurement needs: the sampler fields plus data, output and execution."""

    seq_len: int = 64
    """Tokens per row when DATA has a ``text`` column (tokenized into fixed blocks)."""
    max_rows: int | None = None
    """Use at most this many rows of DATA (None = all)."""
    text_column: str = "text"
    tokenizer: str | None = None
    """Tokenizer folder for checkpoints that ship none."""
    marker_file: str | None = None
    """If set, a checkpoint is complete only once this file exists in its folder (e.g. trainer_state.json)."""
    storage_options: dict = field(default_factory=dict)
    """Extra fsspec options for sources and results (endpoint, credentials, ...)."""
    cache_dir: str | None = None
    """Local cache for remote checkpoints (default: a temp folder per node)."""
    cache_max_gb: float = 50.0
    wandb_project: str | None = "llc-service"
    """wandb project; null disables wandb."""
    wandb_entity: str | None = None
    processes: int | None = None
    """Processes per measurement (one per GPU by default, 1 on CPU)."""
    gpus_per_measurement: float = 1.0
    cpus_per_measurement: float = 1.0
    max_retries: int = 2
    """Ray retries after a worker or node dies (application errors are not retried); for the watcher, the bound on
    re-measuring a checkpoint after a transient failure (storage hiccup, lost worker)."""
    lease_seconds: float = 600.0
    """Watcher: how long a claim on a checkpoint lasts without renewal (renewed every quarter lease while
    measuring). A watcher that dies delays its checkpoints by at most this long."""
    store_per_draw: bool = True
    """Write the per-draw trace table (scalar losses only; never per-token data)."""

    # fields that do not change what is measured (left out of the config hash)
    _NON_IDENTITY = (
        "device",
        "progress",
        "storage_options",
        "cache_dir",
        "cache_max_gb",
        "wandb_project",
        "wandb_entity",
        "processes",
        "gpus_per_measurement",
        "cpus_per_measurement",
        "max_retries",
        "lease_seconds",
        "store_per_draw",
        "marker_file",
        "chain_batching",
    )

    def validate(self) -> None:
        super().validate()
        _check(self, "seq_len", self.seq_len >= 2, "must be >= 2")
        _check(self, "max_rows", self.max_rows is None or self.max_rows >= 1, "must be >= 1 or null")
        _check(self, "processes", self.processes is None or self.processes >= 1, "must be >= 1 or null")
        _check(self, "max_retries", self.max_retries >= 0, "must be >= 0")
        _check(self, "lease_seconds", self.lease_seconds > 0 and math.isfinite(self.lease_seconds),
               "must be a finite number > 0")
        _check(self, "cache_max_gb", self.cache_max_gb > 0, "must be > 0")

    def sampler_config(self) -> SamplerConfig:
        names = {f.name for f in fields(SamplerConfig)}
        return SamplerConfig(**{k: v for k, v in self.to_dict().items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def identity(self) -> dict[str, Any]:
        """The fields that define *what* is measured (hashed into the config hash)."""
        return {k: v for k, v in self.to_dict().items() if k not in self._NON_IDENTITY}

    def config_hash(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def _check(cfg: Any, name: str, ok: bool, why: str) -> None:
    if not ok:
        raise ValueError(f"config field {name!r} {why} (got {getattr(cfg, name)!r})")


# ---------------------------------------------------------------------------------------------------------------
# YAML + overrides


def _type_of(cls: type, name: str) -> Any:
    return typing.get_type_hints(cls)[name]


def coerce(cls: type, name: str, value: Any) -> Any:
    """Convert ``value`` (from YAML or a ``--set`` string) to the declared type of field ``name``."""
    tp = _type_of(cls, name)
    args = typing.get_args(tp)
    optional = (typing.get_origin(tp) in (typing.Union, types.UnionType)) and type(None) in args
    base = next((a for a in args if a is not type(None)), tp) if optional else tp
    if isinstance(value, str):
        text = value.strip()
        if optional and text.lower() in ("none", "null", "~", ""):
            return None
        if base is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"config field {name!r} expects a boolean, got {value!r}")
        if base in (int, float):
            try:
                return base(float(text)) if base is int and float(text).is_integer() else base(text)
            except ValueError:
                raise ValueError(f"config field {name!r} expects {base.__name__}, got {value!r}") from None
        if base is dict or typing.get_origin(base) is dict:
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError as e:
                raise ValueError(f"config field {name!r} expects a JSON object, got {value!r}: {e}") from None
            if not isinstance(parsed, dict):
                raise ValueError(f"config field {name!r} expects a JSON object, got {value!r}")
            return parsed
        return text
    if value is None:
        if optional:
            return None
        raise ValueError(f"config field {name!r} may not be null")
    if base is bool:
        if not isinstance(value, bool):
            raise ValueError(f"config field {name!r} expects a boolean, got {value!r}")
        return value
    if base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if base is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if base is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if base is str and isinstance(value, str):
        return value
    if (base is dict or typing.get_origin(base) is dict) and isinstance(value, dict):
        return value
    raise ValueError(f"config field {name!r} expects {getattr(base, '__name__', base)}, got {value!r}")


def _unknown(cls: type, key: str) -> ValueError:
    names = [f.name for f in fields(cls)]
    close = difflib.get_close_matches(key, names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ValueError(f"unknown config key {key!r}{hint}")


def build_config(cls: type = MeasureConfig, values: dict | None = None, sets: list[str] | None = None):
    """Build and validate a config from a mapping (e.g. parsed YAML) and ``key=value`` overrides."""
    names = {f.name for f in fields(cls)}
    merged: dict[str, Any] = {}
    for key, value in (values or {}).items():
        if key not in names:
            raise _unknown(cls, key)
        merged[key] = coerce(cls, key, value)
    for item in sets or []:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        key = key.strip()
        if key not in names:
            raise _unknown(cls, key)
        merged[key] = coerce(cls, key, value)
    cfg = cls(**merged)
    cfg.validate()
    return cfg


def load_config(path: str | None = None, sets: list[str] | None = None, cls: type = MeasureConfig):
    """Load a YAML config file (optional) and apply ``--set`` overrides; validated."""
    values: dict = {}
    if path:
        import yaml

        with open(path) as f:
            loaded = yaml.safe_load(f) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"config file {path} must hold a mapping of field: value")
        values = loaded
    return build_config(cls, values, sets)
