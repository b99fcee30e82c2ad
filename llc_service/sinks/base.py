"""The sink protocol, a registry of sinks by name, the one result-line formatter, and the stdout sink.

A sink turns a ``MeasurementRecord`` into something outside the process. Parquet is the source of truth;
the others (wandb, stdout) are views of it. Sinks register under a short name; the config's ``sinks`` field
names the views a measurement writes after Parquet (:func:`sinks_for`, :func:`write_all`). The built-in ones are
imported only when first asked for. A new sink: a class with ``write``/``close`` and a ``from_config``
classmethod, decorated with ``@register_sink("name")``, and its module listed in ``_BUILTIN`` (or imported
before use).
"""

from __future__ import annotations

import importlib
import logging
import math
import sys
from typing import Any, Callable, Protocol, runtime_checkable

from llc_service.sinks.record import MeasurementRecord

log = logging.getLogger(__name__)


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


def known_sinks() -> list[str]:
    return sorted(set(_REGISTRY) | set(_BUILTIN))


def sink_from_config(name: str, cfg: Any, results_uri: str) -> Sink:
    """The sink ``name`` set up from a ``MeasureConfig`` (its class's ``from_config``)."""
    if name not in _REGISTRY and name in _BUILTIN:
        importlib.import_module(_BUILTIN[name])
    if name not in _REGISTRY:
        raise ValueError(f"unknown sink {name!r}; known sinks: {', '.join(known_sinks())}")
    return _REGISTRY[name].from_config(cfg, results_uri)


def view_names(cfg: Any, use_wandb: bool = True) -> list[str]:
    """The views ``cfg.sinks`` asks for, in order, without Parquet (always written first) or repeats; wandb only
    when ``use_wandb`` and ``cfg.wandb_project`` are set."""
    names: list[str] = []
    for name in cfg.sinks:
        if name == "parquet" or name in names or (name == "wandb" and not (use_wandb and cfg.wandb_project)):
            continue
        names.append(name)
    return names


def sinks_for(cfg: Any, results_uri: str, use_wandb: bool = True) -> list[tuple[str, Callable[[], Sink]]]:
    """``[(name, make)]``: Parquet first, then the views of :func:`view_names`. Each view is built only when
    written, by :func:`write_all`, so a view that cannot even be set up costs no result."""
    def make(name: str) -> Callable[[], Sink]:
        return lambda: sink_from_config(name, cfg, results_uri)

    return [("parquet", make("parquet"))] + [(n, make(n)) for n in view_names(cfg, use_wandb)]


def write_all(sinks: list[tuple[str, Callable[[], Sink]]], record: MeasurementRecord | list) -> None:
    """Write ``record`` to every sink in order. The first (Parquet, the source of truth) must succeed: its errors
    propagate. The others are views: their errors are logged here, the one place that catches them.

    A list of records is one measurement's rows (refined LLC: one per component): Parquet writes them together
    (``write_group``, one file), each view gets them one by one."""
    records = record if isinstance(record, list) else [record]
    for i, (name, make) in enumerate(sinks):
        if i == 0:
            sink = make()
            sink.write_group(records) if len(records) > 1 else sink.write(records[0])
            sink.close()
            continue
        try:
            sink = make()
            for one in records:
                sink.write(one)
            sink.close()
        except Exception as exc:  # noqa: BLE001 - a view must never cost the result
            log.warning("%s logging failed (%s); the Parquet result is written", name, exc)


def on_outcomes(cfg: Any, results_uri: str, dirty: set[tuple[str, str]], use_wandb: bool = True) -> None:
    """Tell every configured view that has an ``on_outcomes`` hook (wandb: the trajectory run) that the
    (run_id, config_hash) pairs in ``dirty`` have new outcomes. Never raises: views must not cost results."""
    if not dirty:
        return
    for name in view_names(cfg, use_wandb):
        try:
            if name not in _REGISTRY and name in _BUILTIN:
                importlib.import_module(_BUILTIN[name])
            hook = getattr(_REGISTRY.get(name), "on_outcomes", None)
            if hook is not None:
                hook(cfg, results_uri, dirty)
        except Exception as exc:  # noqa: BLE001
            log.warning("%s: updating views of new outcomes failed (%s: %s)", name, type(exc).__name__, exc)


def _num(x: Any, fmt: str) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def summary_line(s: dict, label: str | None = None, seconds: float | None = None) -> str:
    """The one human line for a result row, used by the CLI, the watcher, the jobs and the stdout sink: who, λ̂ ±
    std, L(w*), chains used, time, status, the attempt when > 1, and the error when not ok (first line only).

    ``label`` names the checkpoint (default ``<run_id> step <step>``); ``seconds`` overrides ``wall_seconds``."""
    step = s.get("checkpoint_step")
    who = label or f"{s.get('run_id')} step {step if step is not None else '-'}"
    if s.get("component"):  # refined LLC: one line per component, with that component's own time
        who += f" [{s['component']}]"
        seconds = s.get("component_seconds") if seconds is None else seconds
    status = s.get("status", "?")
    parts = [f"{who}:"]
    if status != "failed":  # a failed row has no estimate to show
        parts += [f"λ̂ = {_num(s.get('llc_mean'), '.4g')} ± {_num(s.get('llc_std'), '.2g')}",
                  f"L(w*) = {_num(s.get('init_loss'), '.4f')}"]
        if s.get("num_chains") is not None or s.get("num_chains_used") is not None:
            parts.append(f"chains {_num(s.get('num_chains_used'), 'd')}/{_num(s.get('num_chains'), 'd')}")
    seconds = s.get("wall_seconds") if seconds is None else seconds
    parts.append(f"{_num(seconds, '.1f')} s")
    parts.append(f"[{status}]")
    if (s.get("attempt") or 1) > 1:
        parts.append(f"attempt {s['attempt']}")
    if status != "ok" and s.get("error"):
        kind = f"({s['error_kind']}) " if s.get("error_kind") else ""
        parts.append(f"{kind}{str(s['error']).strip().splitlines()[0]}")
    return "  ".join(parts)


@register_sink("stdout")
class StdoutSink:
    """Prints one line per measurement (to stdout unless another stream is given)."""

    def __init__(self, stream=None):
        self.stream = stream

    @classmethod
    def from_config(cls, cfg: Any, results_uri: str) -> StdoutSink:
        return cls()

    def write(self, record: MeasurementRecord) -> None:
        print(summary_line(record.summary), file=self.stream or sys.stdout, flush=True)

    def close(self) -> None:
        pass
