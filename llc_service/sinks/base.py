"""The sink protocol, a registry of sinks by name, and the stdout sink.

A sink turns a ``MeasurementRecord`` into something outside the process. Parquet is the source of truth;
the others (wandb, stdout) are views of it. Sinks register under a short name so a config or the CLI can pick
them by string; the built-in ones are imported only when first asked for.
"""

from __future__ import annotations

import importlib
import math
import sys
from typing import Any, Callable, Protocol, runtime_checkable

from llc_service.sinks.record import MeasurementRecord


@runtime_checkable
class Sink(Protocol):
    def write(self, record: MeasurementRecord) -> None: ...

    def close(self) -> None: ...


_REGISTRY: dict[str, Callable[..., Sink]] = {}
_BUILTIN = {
    "parquet": "llc_service.sinks.parquet",
    "wandb": "llc_service.sinks.wandb",
    "stdout": "llc_service.sinks.base",
}


def register_sink(name: str):
    """Class decorator: make a sink constructible with ``get_sink(name, **kw)``."""

    def deco(cls):
        _REGISTRY[name] = cls
        return cls

    return deco


def get_sink(name: str, **kw: Any) -> Sink:
    """Build the sink registered as ``name`` with keyword arguments ``kw``."""
    if name not in _REGISTRY and name in _BUILTIN:
        importlib.import_module(_BUILTIN[name])
    if name not in _REGISTRY:
        known = sorted(set(_REGISTRY) | set(_BUILTIN))
        raise ValueError(f"unknown sink {name!r}; known sinks: {', '.join(known)}")
    return _REGISTRY[name](**kw)


def _num(x: Any, fmt: str) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def summary_line(s: dict) -> str:
    """One human line: who, λ̂ ± std, L(w*), chains used, time, and status/error when not ok."""
    step = s.get("checkpoint_step")
    who = f"{s.get('run_id')} step {step if step is not None else '-'}"
    status = s.get("status", "?")
    parts = [f"{who}:"]
    if status != "failed":  # a failed row has no estimate to show
        parts += [f"λ̂ = {_num(s.get('llc_mean'), '.4g')} ± {_num(s.get('llc_std'), '.2g')}",
                  f"L(w*) = {_num(s.get('init_loss'), '.4f')}"]
        if s.get("num_chains") is not None or s.get("num_chains_used") is not None:
            parts.append(f"chains {_num(s.get('num_chains_used'), 'd')}/{_num(s.get('num_chains'), 'd')}")
    parts.append(f"{_num(s.get('wall_seconds'), '.1f')} s")
    parts.append(f"[{status}]")
    if status != "ok" and s.get("error"):
        kind = f"({s['error_kind']}) " if s.get("error_kind") else ""
        parts.append(f"{kind}{s['error']}")
    return "  ".join(parts)


@register_sink("stdout")
class StdoutSink:
    """Prints one line per measurement (to stdout unless another stream is given)."""

    def __init__(self, stream=None):
        self.stream = stream

    def write(self, record: MeasurementRecord) -> None:
        print(summary_line(record.summary), file=self.stream or sys.stdout, flush=True)

    def close(self) -> None:
        pass
