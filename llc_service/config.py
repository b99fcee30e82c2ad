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
BASELINES = ("init", "paired")

RUNTIME = {"identity": False}
"""Field metadata of settings that change how or where the work runs, not what is measured: left out of
``config_hash`` (every other field is part of a measurement's identity)."""


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
    device: str = field(default="auto", metadata=RUNTIME)
    """"auto" (CUDA if available), "cpu", "cuda", "cuda:N"."""
    autocast_dtype: str | None = None
    """"bf16" to autocast the forward on CUDA; weights and sampler state stay fp32."""
    chain_batching: str = field(default="auto", metadata=RUNTIME)
    """"vmap" runs all chains of a process through one batched forward (small models); "off" one by one;
    "auto" picks vmap for models under 2M parameters on CPU."""
    progress: bool | None = field(default=None, metadata=RUNTIME)
    """Progress bar: None = only when stderr is a TTY."""
    noise_scale: float = 1.0
    """Multiplies the Langevin noise. Keep 1; 0 turns SGLD into SGD (a diagnostic), other values are not SGLD."""
    baseline: str = field(default="init", metadata={"hash_omits": "init"})
    """"init": λ̂ = nβ·(mean draw loss − L(w*)), L(w*) averaged over ``init_loss_batches``; "paired": each draw's
    loss minus the loss at w* on the same minibatch (one extra forward per draw, no backward; lower variance, see
    docs/benchmarks.md)."""
    mala_acceptance: bool = field(default=True, metadata=RUNTIME)
    """Track each chain's mean MALA acceptance (plain SGLD only; one saved copy of the weights per chain)."""

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
        _check(self, "baseline", self.baseline in BASELINES, f"must be one of {BASELINES}")
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
    marker_file: str | None = field(default=None, metadata=RUNTIME)
    """If set, a checkpoint is complete only once this file exists in its folder (e.g. trainer_state.json)."""
    storage_options: dict = field(default_factory=dict, metadata=RUNTIME)
    """Extra fsspec options for sources and results (endpoint, credentials, ...)."""
    cache_dir: str | None = field(default=None, metadata=RUNTIME)
    """Local cache for remote checkpoints (default: a temp folder per node)."""
    cache_max_gb: float = field(default=50.0, metadata=RUNTIME)
    wandb_project: str | None = field(default="llc-service", metadata=RUNTIME)
    """wandb project; null disables wandb."""
    wandb_entity: str | None = field(default=None, metadata=RUNTIME)
    processes: int | None = field(default=None, metadata=RUNTIME)
    """Processes per measurement (one per GPU by default, 1 on CPU)."""
    shard_size: int | str = field(default="auto", metadata=RUNTIME)
    """Processes sharing one copy of the model (FSDP2); must divide ``processes``. "auto": the smallest that fits
    ``device_memory_gb`` by the memory plan (see docs/large-models.md). Results do not depend on it."""
    device_memory_gb: float | None = field(default=None, metadata=RUNTIME)
    """Memory of one device for the memory plan (None: the GPU's memory; on CPU the host's available memory
    divided by the processes)."""
    gpus_per_measurement: float = field(default=1.0, metadata=RUNTIME)
    cpus_per_measurement: float = field(default=1.0, metadata=RUNTIME)
    max_retries: int = field(default=2, metadata=RUNTIME)
    """Ray retries after a worker or node dies (application errors are not retried); for the watcher, the bound on
    re-measuring a checkpoint after a transient failure (storage hiccup, lost worker)."""
    lease_seconds: float = field(default=600.0, metadata=RUNTIME)
    """Watcher: how long a claim on a checkpoint lasts without renewal (renewed every quarter lease while
    measuring). A watcher that dies delays its checkpoints by at most this long."""
    store_per_draw: bool = field(default=True, metadata=RUNTIME)
    """Write the per-draw trace table (scalar losses only; never per-token data)."""
    sinks: list[str] = field(default_factory=lambda: ["wandb"], metadata=RUNTIME)
    """Views written after Parquet (always first, the source of truth): ``wandb`` (when ``wandb_project`` is set
    and not ``--no-wandb``), ``stdout`` (one line per measurement), or any registered sink."""
    components: list | None = field(default=None, metadata={"hash_omits": None})
    """Refined LLC: measure these components one after another on one loaded checkpoint, one summary row each.
    Presets ``attention_heads``, ``mlps``, ``layers``, ``all`` (the whole model) and/or entries
    ``{name, param_filter, heads, neurons}``; ``--set components=attention_heads,all``. See llc_service/components."""

    def validate(self) -> None:
        super().validate()
        _check(self, "seq_len", self.seq_len >= 2, "must be >= 2")
        _check(self, "max_rows", self.max_rows is None or self.max_rows >= 1, "must be >= 1 or null")
        _check(self, "processes", self.processes is None or self.processes >= 1, "must be >= 1 or null")
        _check(self, "shard_size", self.shard_size == "auto" or (isinstance(self.shard_size, int)
                                                                  and not isinstance(self.shard_size, bool)
                                                                  and self.shard_size >= 1),
               'must be an integer >= 1 or "auto"')
        _check(self, "device_memory_gb", self.device_memory_gb is None or self.device_memory_gb > 0,
               "must be > 0 or null")
        _check(self, "max_retries", self.max_retries >= 0, "must be >= 0")
        _check(self, "lease_seconds", self.lease_seconds > 0 and math.isfinite(self.lease_seconds),
               "must be a finite number > 0")
        _check(self, "cache_max_gb", self.cache_max_gb > 0, "must be > 0")
        from llc_service.sinks.base import known_sinks

        unknown = [n for n in self.sinks if n not in known_sinks()]
        _check(self, "sinks", not unknown, f"names unknown sink(s) {unknown}; known: {known_sinks()}")
        if self.components is not None:
            from llc_service.components import validate_spec
            from llc_service.errors import UsageError

            try:
                validate_spec(self.components)
            except ValueError as e:
                raise UsageError(str(e)) from None

    def sampler_config(self) -> SamplerConfig:
        names = {f.name for f in fields(SamplerConfig)}
        return SamplerConfig(**{k: v for k, v in self.to_dict().items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def identity(self) -> dict[str, Any]:
        """The fields that define *what* is measured (hashed into the config hash): all but the ``RUNTIME`` ones, and
        fields added later while they hold the value that reproduces older results (``hash_omits``), so those results
        keep their hash."""
        values = self.to_dict()
        return {f.name: values[f.name] for f in fields(self) if f.metadata.get("identity", True)
                and not ("hash_omits" in f.metadata and f.metadata["hash_omits"] == values[f.name])}

    def config_hash(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


@dataclass
class WatchConfig:
    """How the watcher runs (not what it measures: that is the ``MeasureConfig``). The CLI flags of
    ``llc-service watch`` and the keyword arguments of :func:`llc_service.watcher.watch` set these fields."""

    run_id: str | None = None
    """Training run id for every checkpoint (default: each checkpoint's parent folder name)."""
    once: bool = False
    """Measure what is there now and return once every complete checkpoint found has an outcome."""
    interval: float = 60.0
    """Seconds between listings of the source."""
    address: str | None = None
    """Ray address (default: ``RAY_ADDRESS``, else a private local cluster)."""
    use_wandb: bool = True
    """Log each measurement and the trajectory to wandb (Parquet is always written)."""
    max_concurrent: int | None = None
    """At most this many measurements in flight (None: as many as Ray schedules)."""
    stop_after: float | None = None
    """Stop after this many seconds (demos, tests)."""
    pending_timeout: float | None = 3600.0
    """Seconds a checkpoint may stay pending with unchanged files before it gets a failed row (None: forever)."""
    retry_delay: float = 10.0
    """Back-off before the first retry of a transient failure, doubled for each further one."""

    def validate(self) -> None:
        """Raise :class:`~llc_service.errors.UsageError` naming the flag; called before any work."""
        from llc_service.errors import UsageError

        def need(ok: bool, flag: str, why: str, value: Any) -> None:
            if not ok:
                raise UsageError(f"{flag} {why} (got {value})")

        need(self.interval > 0 and math.isfinite(self.interval), "--interval", "must be > 0", self.interval)
        need(self.max_concurrent is None or self.max_concurrent >= 1, "--max-concurrent", "must be >= 1",
             self.max_concurrent)
        need(self.stop_after is None or self.stop_after >= 0, "--stop-after", "must be >= 0", self.stop_after)
        need(self.pending_timeout is None or self.pending_timeout > 0, "pending_timeout", "must be > 0 or None",
             self.pending_timeout)
        need(self.retry_delay >= 0 and math.isfinite(self.retry_delay), "retry_delay", "must be >= 0",
             self.retry_delay)


def _check(cfg: Any, name: str, ok: bool, why: str) -> None:
    if not ok:
        from llc_service.errors import UsageError

        raise UsageError(f"config field {name!r} {why} (got {getattr(cfg, name)!r})")


# ---------------------------------------------------------------------------------------------------------------
# YAML + overrides


def _type_of(cls: type, name: str) -> Any:
    return typing.get_type_hints(cls)[name]


_KINDS = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", dict: "a mapping",
          list: "a list"}


def _split_optional(tp: Any) -> tuple[Any, bool]:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        return next(a for a in args if a is not type(None)), True
    return tp, False


def coerce(cls: type, name: str, value: Any) -> Any:
    """Convert ``value`` (from YAML or a ``--set`` string) to the declared type of field ``name``."""
    return coerce_value(_type_of(cls, name), value, name)


def coerce_value(tp: Any, value: Any, where: str, label: str = "config field", lenient: bool = False) -> Any:
    """Convert ``value`` (parsed YAML, or a string from the command line) to the type ``tp``; the one coercion of
    the package (config fields, and job files through :mod:`llc_service.scheduler.job_spec`).

    Strings are parsed by the target type (``"1e-4"`` → float, ``"null"`` → None where allowed, ``"a,b"`` or a
    JSON list → list, a JSON object → dict). ``dict[str, X]`` and dataclass types (a mapping of known keys) are
    converted value by value. ``lenient`` (job files): any scalar becomes a string where a string is expected
    (Ray wants strings in env vars and metadata) and None is allowed everywhere. Errors are
    :class:`~llc_service.errors.UsageError` naming ``label`` ``where``.
    """
    from llc_service.errors import UsageError

    if tp is Any:
        return value
    base, optional = _split_optional(tp)
    if typing.get_origin(base) in (typing.Union, types.UnionType):  # e.g. int | str: the first type that takes it
        for option in typing.get_args(base):
            try:
                return coerce_value(option | None if optional else option, value, where, label, lenient)
            except UsageError:
                continue
        raise UsageError(f"{label} {where!r} expects one of {typing.get_args(base)}, got {value!r}")
    origin = typing.get_origin(base) or base

    def refuse(extra: str = "") -> UsageError:
        kind = _KINDS.get(origin, getattr(base, "__name__", str(base)))
        return UsageError(f"{label} {where!r} expects {kind}, got {value!r}{extra}")

    if isinstance(value, str):
        text = value.strip()
        if optional and text.lower() in ("none", "null", "~", ""):
            return None
        if base is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise refuse()
        if base in (int, float):
            try:
                return base(float(text)) if base is int and float(text).is_integer() else base(text)
            except ValueError:
                raise refuse() from None
        if origin is list:
            if text.startswith("["):
                try:
                    parsed = json.loads(text)
                except json.JSONDecodeError as e:
                    raise refuse(f": {e}") from None
            else:
                parsed = [part.strip() for part in text.split(",") if part.strip()]
            return coerce_value(tp, parsed, where, label, lenient)
        if origin is dict or dataclasses.is_dataclass(base):
            return coerce_value(tp, json_object(text, f"{label} {where!r}"), where, label, lenient)
        return value if lenient else text
    if value is None:
        if optional or lenient:
            return None
        raise UsageError(f"{label} {where!r} may not be null")
    if base is bool:
        if not isinstance(value, bool):
            raise refuse()
        return value
    if base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if base is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if base is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if base is str and isinstance(value, str):
        return value
    if base is str and lenient and not isinstance(value, (dict, list)):
        return str(value).lower() if isinstance(value, bool) else str(value)
    if origin is dict and isinstance(value, dict):
        inner = typing.get_args(base)[1] if typing.get_args(base) else Any
        return {str(k): coerce_value(inner, v, f"{where}.{k}", label, lenient) for k, v in value.items()}
    if dataclasses.is_dataclass(base) and isinstance(value, dict):
        hints = typing.get_type_hints(base)
        return {str(k): coerce_value(hints.get(k, Any), v, f"{where}.{k}", label, lenient) for k, v in value.items()}
    if origin is list and isinstance(value, (list, tuple)):
        inner = typing.get_args(base)[0] if typing.get_args(base) else Any
        return [coerce_value(inner, v, where, label, lenient) for v in value]
    raise refuse()


def read_yaml_mapping(path: str, what: str, shape: str = "of field: value") -> dict:
    """A YAML file that must hold a mapping (a config file, a job file); ``what`` and ``shape`` word the error."""
    import yaml

    from llc_service.errors import UsageError

    with open(path) as f:
        loaded = yaml.safe_load(f) or {}
    if not isinstance(loaded, dict):
        raise UsageError(f"{what} {path} must hold a mapping {shape}")
    return loaded


def split_setting(item: str, flag: str = "--set", form: str = "key=value") -> tuple[str, str]:
    """``"key=value"`` → (key stripped, value as given); a :class:`UsageError` naming ``flag`` otherwise."""
    from llc_service.errors import UsageError

    if "=" not in item:
        raise UsageError(f"{flag} expects {form}, got {item!r}")
    key, value = item.split("=", 1)
    return key.strip(), value


def json_object(text: str, what: str) -> dict:
    """``text`` parsed as a JSON object, or a :class:`UsageError` saying ``what`` expected one."""
    from llc_service.errors import UsageError

    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"{what} expects a JSON object, got {text!r}: {e}") from None
    if not isinstance(parsed, dict):
        raise UsageError(f"{what} expects a JSON object, got {text!r}")
    return parsed


def _unknown(cls: type, key: str) -> ValueError:
    from llc_service.errors import UsageError

    names = [f.name for f in fields(cls)]
    close = difflib.get_close_matches(key, names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return UsageError(f"unknown config key {key!r}{hint}")


def build_config(cls: type = MeasureConfig, values: dict | None = None, sets: list[str] | None = None):
    """Build and validate a config from a mapping (e.g. parsed YAML) and ``key=value`` overrides."""

    names = {f.name for f in fields(cls)}
    merged: dict[str, Any] = {}
    for key, value in (values or {}).items():
        if key not in names:
            raise _unknown(cls, key)
        merged[key] = coerce(cls, key, value)
    for item in sets or []:
        key, value = split_setting(item)
        if key not in names:
            raise _unknown(cls, key)
        merged[key] = coerce(cls, key, value)
    cfg = cls(**merged)
    cfg.validate()
    return cfg


def load_config(path: str | None = None, sets: list[str] | None = None, cls: type = MeasureConfig):
    """Load a YAML config file (optional) and apply ``--set`` overrides; validated."""
    values = read_yaml_mapping(path, "config file") if path else {}
    return build_config(cls, values, sets)
