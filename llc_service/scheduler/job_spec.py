"""Job files (``jobs/*.yaml``): load, apply ``--set`` overrides, fill ``{{params}}``, derive the submission id.

A job file is what ``llc-service submit`` sends to Ray Jobs. Format (see ``docs/cluster.md``)::

    name: measure-one                 # prefix of the submission id (default: the file name)
    params:                           # strings substituted for {{name}} in the entrypoint
      checkpoint: s3://bucket/run1/step1000
    entrypoint: llc-service measure {{checkpoint}} --data ... --out ...
    runtime_env:                      # Ray runtime_env; a local working_dir / py_modules path is relative to the file
      working_dir: ..
      excludes: [".git", ".venv"]
      env_vars: {WANDB_MODE: offline}
    entrypoint_num_cpus: 1            # resources reserved for the entrypoint process itself
    entrypoint_num_gpus: 0
    entrypoint_memory: null           # bytes
    entrypoint_resources: {}          # custom resources
    metadata: {team: interp}          # strings shown in the dashboard
    submission_id: null               # explicit id; default: derived from the content (see below)

The submission id is ``llc-<name>-<hash>`` with the hash over the resolved job (after overrides, params filled,
working_dir as written): the same job submitted twice gets the same id, and Ray refuses to run an id twice. To run
the same job again on purpose, change something, e.g. ``--set metadata.rerun=2``.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import json
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llc_service.config import coerce_value, read_yaml_mapping, split_setting
from llc_service.errors import UsageError


@dataclass
class RuntimeEnvFields:
    """Types of the known keys under ``runtime_env`` (others are taken as parsed YAML)."""

    working_dir: str | None = None
    env_vars: dict[str, str] = field(default_factory=dict)
    pip: Any = None
    py_modules: Any = None
    excludes: Any = None
    conda: Any = None
    uv: Any = None
    config: Any = None


@dataclass
class JobFile:
    """The top-level keys of a job file and their types (coerced like config fields, leniently: Ray wants
    strings, so a number given for a string becomes one)."""

    name: str | None = None
    params: dict[str, str] = field(default_factory=dict)
    entrypoint: str | None = None
    runtime_env: RuntimeEnvFields | None = None
    entrypoint_num_cpus: float | None = None
    entrypoint_num_gpus: float | None = None
    entrypoint_memory: int | None = None
    entrypoint_resources: dict[str, float] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    submission_id: str | None = None


_PARAM = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_URI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


@dataclass
class JobSpec:
    """A resolved job: ``fields`` are the ``JobSubmissionClient.submit_job`` keyword arguments."""

    name: str
    fields: dict[str, Any]
    submission_id: str
    source: str


def _coerce(tp: Any, value: Any, where: str) -> Any:
    return coerce_value(tp, value, where, label="job key", lenient=True)


def _type_at(path: list[str]) -> Any:
    """Declared type at a dotted path; raises for an unknown top-level key."""
    hints = typing.get_type_hints(JobFile)
    top = path[0]
    if top not in hints:
        close = difflib.get_close_matches(top, list(hints), n=1)
        raise UsageError(f"unknown job key {top!r}" + (f"; did you mean {close[0]!r}?" if close else ""))
    tp: Any = hints[top]
    for depth, part in enumerate(path[1:], start=1):
        base = typing.get_args(tp)[0] if type(None) in typing.get_args(tp) else tp
        if dataclasses.is_dataclass(base):
            tp = typing.get_type_hints(base).get(part, Any)
        elif typing.get_origin(base) is dict:
            tp = typing.get_args(base)[1]
        elif base is Any:
            tp = Any
        else:
            raise UsageError(f"job key {'.'.join(path[:depth])!r} is not a mapping")
    return tp


def apply_set(job: dict, item: str) -> None:
    """Apply one ``key.sub=value`` override in place, typed by the key (numbers for resources, strings for
    params/metadata/env_vars, a YAML value elsewhere, e.g. ``runtime_env.pip=[torch]``)."""
    import yaml

    key, raw = split_setting(item)
    raw = raw.strip()
    path = key.split(".")
    tp = _type_at(path)
    base = typing.get_args(tp)[0] if type(None) in typing.get_args(tp) else tp
    if base is str:
        value: Any = raw
    elif raw.lower() in ("null", "none", "~"):
        value = None
    else:
        value = _coerce(tp, raw if base in (float, int) else yaml.safe_load(raw), key)
    node = job
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise UsageError(f"job key {part!r} in {key!r} is not a mapping")
    node[path[-1]] = value


def render(entrypoint: str, params: dict[str, str]) -> str:
    """Fill ``{{name}}`` placeholders; an unknown name is an error (a silent empty argument is worse)."""

    def fill(m: re.Match) -> str:
        if m.group(1) not in params:
            raise UsageError(f"entrypoint uses {{{{{m.group(1)}}}}} but params has no {m.group(1)!r} "
                             f"(give it with --set params.{m.group(1)}=...)")
        return str(params[m.group(1)])

    return _PARAM.sub(fill, entrypoint)


def content_hash(fields: dict[str, Any]) -> str:
    blob = json.dumps(fields, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _slug(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_-]+", "-", text).strip("-")[:40] or "job"


def _resolve_local(value: Any, base: Path) -> Any:
    """A relative local path is taken relative to the job file, so the job works from any current directory."""
    if isinstance(value, str) and not _URI.match(value) and not Path(value).is_absolute():
        return str((base / value).resolve())
    return value


def load_job(path: str, sets: list[str] | None = None) -> JobSpec:
    """Read a job file, apply overrides, fill params, and derive the submission id."""
    raw = read_yaml_mapping(path, "job file", "(entrypoint: ..., runtime_env: ...)")
    job: dict[str, Any] = {}
    for key, value in raw.items():
        job[key] = _coerce(_type_at([key]), copy.deepcopy(value), key)
    for item in sets or []:
        apply_set(job, item)
    if not job.get("entrypoint"):
        raise UsageError(f"job file {path} has no entrypoint")

    name = _slug(job.pop("name", None) or Path(path).stem)
    params = job.pop("params", None) or {}
    explicit_id = job.pop("submission_id", None)
    fields = {k: v for k, v in job.items() if v not in (None, {}, [])}
    fields["entrypoint"] = render(fields["entrypoint"], params).strip()
    sid = explicit_id or f"llc-{name}-{content_hash(fields)}"

    # only now make local paths absolute: the id must not depend on where the checkout lives
    env = fields.get("runtime_env")
    if env:
        base = Path(path).resolve().parent
        env = dict(env)
        if "working_dir" in env:
            env["working_dir"] = _resolve_local(env["working_dir"], base)
        if isinstance(env.get("py_modules"), list):
            env["py_modules"] = [_resolve_local(m, base) for m in env["py_modules"]]
        fields["runtime_env"] = env
    return JobSpec(name=name, fields=fields, submission_id=sid, source=str(path))
