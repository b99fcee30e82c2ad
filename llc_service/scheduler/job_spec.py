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
import difflib
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FLOAT, INT, STR, ANY = "float", "int", "str", "any"

#: top-level keys and their types; ``dict:<type>`` is a mapping whose values have that type
FIELDS = {
    "name": STR,
    "params": f"dict:{STR}",
    "entrypoint": STR,
    "runtime_env": "dict:any",
    "entrypoint_num_cpus": FLOAT,
    "entrypoint_num_gpus": FLOAT,
    "entrypoint_memory": INT,
    "entrypoint_resources": f"dict:{FLOAT}",
    "metadata": f"dict:{STR}",
    "submission_id": STR,
}
#: types of known keys under runtime_env (others are parsed as YAML values)
RUNTIME_ENV_FIELDS = {"working_dir": STR, "env_vars": f"dict:{STR}", "pip": ANY, "py_modules": ANY,
                      "excludes": ANY, "conda": ANY, "uv": ANY, "config": ANY}

_PARAM = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_URI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


@dataclass
class JobSpec:
    """A resolved job: ``fields`` are the ``JobSubmissionClient.submit_job`` keyword arguments."""

    name: str
    fields: dict[str, Any]
    submission_id: str
    source: str


def _coerce(kind: str, value: Any, where: str) -> Any:
    if value is None or kind == ANY:
        return value
    if kind == STR:
        if isinstance(value, (dict, list)):
            raise ValueError(f"job key {where!r} expects a string, got {value!r}")
        return str(value) if not isinstance(value, bool) else str(value).lower()
    if kind in (FLOAT, INT):
        if isinstance(value, bool):
            raise ValueError(f"job key {where!r} expects a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"job key {where!r} expects a number, got {value!r}") from None
        if kind == INT:
            if not number.is_integer():
                raise ValueError(f"job key {where!r} expects an integer, got {value!r}")
            return int(number)
        return number
    if kind.startswith("dict:"):
        if not isinstance(value, dict):
            raise ValueError(f"job key {where!r} expects a mapping, got {value!r}")
        inner = kind.split(":", 1)[1]
        if where == "runtime_env":
            return {k: _coerce(RUNTIME_ENV_FIELDS.get(k, ANY), v, f"runtime_env.{k}") for k, v in value.items()}
        return {str(k): _coerce(inner, v, f"{where}.{k}") for k, v in value.items()}
    raise AssertionError(kind)


def _kind_at(path: list[str]) -> str:
    """Declared type at a dotted path; raises for an unknown top-level key."""
    top = path[0]
    if top not in FIELDS:
        close = difflib.get_close_matches(top, list(FIELDS), n=1)
        raise ValueError(f"unknown job key {top!r}" + (f"; did you mean {close[0]!r}?" if close else ""))
    kind = FIELDS[top]
    for depth, part in enumerate(path[1:], start=1):
        if not kind.startswith("dict:"):
            raise ValueError(f"job key {'.'.join(path[:depth])!r} is not a mapping")
        kind = RUNTIME_ENV_FIELDS.get(part, ANY) if path[:depth] == ["runtime_env"] else kind.split(":", 1)[1]
        if kind == ANY and depth < len(path) - 1:
            kind = "dict:any"
    return kind


def apply_set(job: dict, item: str) -> None:
    """Apply one ``key.sub=value`` override in place, typed by the key (numbers for resources, strings for
    params/metadata/env_vars, a YAML value elsewhere, e.g. ``runtime_env.pip=[torch]``)."""
    import yaml

    if "=" not in item:
        raise ValueError(f"--set expects key=value, got {item!r}")
    key, raw = (s.strip() for s in item.split("=", 1))
    path = key.split(".")
    kind = _kind_at(path)
    if kind == STR:
        value: Any = raw
    elif raw.lower() in ("null", "none", "~"):
        value = None
    else:
        value = _coerce(kind, raw if kind in (FLOAT, INT) else yaml.safe_load(raw), key)
    node = job
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"job key {part!r} in {key!r} is not a mapping")
    node[path[-1]] = value


def render(entrypoint: str, params: dict[str, str]) -> str:
    """Fill ``{{name}}`` placeholders; an unknown name is an error (a silent empty argument is worse)."""

    def fill(m: re.Match) -> str:
        if m.group(1) not in params:
            raise ValueError(f"entrypoint uses {{{{{m.group(1)}}}}} but params has no {m.group(1)!r} "
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
    import yaml

    with open(path) as f:
        raw = yaml.safe_load(f) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"job file {path} must hold a mapping (entrypoint: ..., runtime_env: ...)")
    job: dict[str, Any] = {}
    for key, value in raw.items():
        _kind_at([key])
        job[key] = _coerce(FIELDS[key], copy.deepcopy(value), key)
    for item in sets or []:
        apply_set(job, item)
    if not job.get("entrypoint"):
        raise ValueError(f"job file {path} has no entrypoint")

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
