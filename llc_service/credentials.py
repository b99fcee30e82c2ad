"""Credentials stay out of command lines and out of everything the service writes.

A command line is public: ``ps`` shows it to every user of a shared node, wandb used to record it in the run
file (``wandb sync`` uploads that), and a Ray job's entrypoint is shown in the dashboard. So secrets are refused
there, with one error that names the key, never the value, and says where they belong instead:

- ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN`` in the environment (s3fs and botocore
  read them), or an AWS profile: ``--storage-options '{"profile": "name"}'``;
- a storage-options file only you can read: ``--storage-options @FILE`` (JSON; refused if group or others can
  read it, ``chmod 600 FILE``).

Everything written (Parquet ``config_json``, the wandb config) goes through :func:`redact`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
from typing import Any

from llc_service.errors import UsageError

SECRET_KEY = re.compile(r"secret|password|passwd|credential|token(?!izer)|api_?key|access_?key|private_?key"
                        r"|^key$|session|sas_?url|connection_?string", re.IGNORECASE)
"""Option or variable names that hold credentials (s3fs key/secret/token, botocore aws_*, gcsfs token, adlfs
account_key/sas_token/connection_string, WANDB_API_KEY, ...); ``tokenizer`` is not one."""

#: gcsfs ``token`` values that name a way to authenticate rather than a credential
_TOKEN_MODES = {"anon", "google_default", "cloud", "browser", "cache"}

WHERE = ("put credentials in the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), in an "
         "AWS profile (--storage-options '{\"profile\": \"NAME\"}'), or in a storage-options file only you can read "
         "(--storage-options @FILE, a JSON file with mode 600)")

REDACTED = "<redacted>"


class CredentialsError(UsageError):
    """Credentials where they would leak (a command line, a job entrypoint, a readable file). Exit code 2."""


def is_secret_key(key: Any) -> bool:
    return bool(SECRET_KEY.search(str(key)))


def _is_secret(key: Any, value: Any) -> bool:
    if not is_secret_key(key) or value in (None, "", False, {}, []):
        return False
    return not (str(key).lower() == "token" and isinstance(value, str) and value in _TOKEN_MODES)


def redact(options: Any) -> Any:
    """``options`` with every credential value replaced by ``<redacted>``, at any depth (dicts and lists)."""
    if isinstance(options, dict):
        return {k: REDACTED if _is_secret(k, v) else redact(v) for k, v in options.items()}
    if isinstance(options, list):
        return [redact(v) for v in options]
    return options


def secret_paths(options: Any, prefix: str = "") -> list[str]:
    """Dotted names of the credential entries in ``options`` (``client_kwargs.aws_secret_access_key``)."""
    found: list[str] = []
    if isinstance(options, dict):
        for k, v in options.items():
            name = f"{prefix}{k}"
            if _is_secret(k, v):
                found.append(name)
            else:
                found += secret_paths(v, f"{name}.")
    elif isinstance(options, list):
        for i, v in enumerate(options):
            found += secret_paths(v, f"{prefix}{i}.")
    return found


def refuse_secrets(options: Any, where: str) -> None:
    """Raise :class:`CredentialsError` naming the credential keys in ``options`` (never their values)."""
    keys = secret_paths(options)
    if keys:
        names = ", ".join(repr(k) for k in keys)
        raise CredentialsError(f"{where} holds credentials ({names}); command lines are visible to other users "
                               f"(ps, job dashboards) and were recorded by wandb. Refusing them: {WHERE}")


def read_private_json(path: str) -> dict:
    """JSON object from a file that only its owner can read (mode & 0o077 == 0), else :class:`CredentialsError`."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise CredentialsError(f"storage-options file {path}: {exc.strerror or exc}") from None
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise CredentialsError(f"storage-options file {path} is readable by others (mode "
                               f"{stat.S_IMODE(st.st_mode):03o}); it may hold credentials: chmod 600 {path}")
    try:
        with open(path) as f:
            value = json.load(f)
    except ValueError as exc:
        raise CredentialsError(f"storage-options file {path} is not valid JSON ({exc.msg}, line {exc.lineno})") \
            from None
    if not isinstance(value, dict):
        raise CredentialsError(f"storage-options file {path} must hold a JSON object of fsspec options")
    return value


def parse_storage_options(arg: str | None) -> dict | None:
    """``--storage-options`` value: ``@FILE`` (private JSON file, may hold credentials) or inline JSON (may not)."""
    if not arg:
        return None
    if arg.startswith("@"):
        return read_private_json(os.path.expanduser(arg[1:]))
    try:
        value = json.loads(arg)
    except ValueError as exc:
        # the message of json's error quotes no input, so a mistyped secret is not echoed either
        raise CredentialsError(f"--storage-options is not valid JSON ({exc.msg}); give a JSON object or @FILE") \
            from None
    if not isinstance(value, dict):
        raise CredentialsError("--storage-options must be a JSON object, e.g. '{\"anon\": true}', or @FILE")
    refuse_secrets(value, "--storage-options")
    return value


def refuse_secret_sets(sets: list[str] | None) -> None:
    """``--set storage_options=...`` (or any ``--set`` of a credential-named key) is a command line too."""
    import yaml

    for item in sets or []:
        key, _, raw = item.partition("=")
        key = key.strip()
        if is_secret_key(key) and raw.strip():
            raise CredentialsError(f"--set {key}=... holds a credential; {WHERE}")
        if key.startswith("storage_options"):
            try:
                value = yaml.safe_load(raw)
            except yaml.YAMLError:  # the config parser's error would quote the text, secrets and all
                raise CredentialsError(f"--set {key}=... is not a valid JSON/YAML mapping") from None
            refuse_secrets(value, f"--set {key}")


def refuse_readable_config(path: str | None) -> None:
    """A ``--config`` YAML holding credentials must be private like a storage-options file."""
    if not path or not os.path.isfile(path) or not stat.S_IMODE(os.stat(path).st_mode) & 0o077:
        return
    import yaml

    try:
        with open(path) as f:
            loaded = yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return  # the config loader reports it
    keys = secret_paths(loaded) if isinstance(loaded, dict) else []
    if keys:
        raise CredentialsError(f"config file {path} holds credentials ({', '.join(repr(k) for k in keys)}) and is "
                               f"readable by others: chmod 600 {path}, or {WHERE}")


def cli_storage_options(args) -> dict | None:
    """The checked ``--storage-options`` of parsed CLI ``args``; ``--set`` overrides and ``--config`` checked too."""
    refuse_secret_sets(getattr(args, "sets", None))
    refuse_readable_config(getattr(args, "config", None))
    return parse_storage_options(getattr(args, "storage_options", None))


_ASSIGN = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.+)$")


def refuse_secrets_in_job(fields: dict, source: str) -> None:
    """A Ray job's entrypoint, runtime_env and metadata are shown in the dashboard: no credentials there.

    Checks ``--storage-options`` JSON and ``--set`` values in the entrypoint, ``VAR=value`` assignments of
    credential-named variables, and credential-named keys anywhere in ``runtime_env`` (``env_vars``) and
    ``metadata``. Credentials reach jobs through the cluster's environment (Kubernetes secrets, the Slurm user's
    environment, an instance profile), never through the job.
    """
    entrypoint = str(fields.get("entrypoint") or "")
    try:
        argv = shlex.split(entrypoint)
    except ValueError:
        argv = entrypoint.split()
    where = f"job {source}: the entrypoint (shown in the Ray dashboard)"
    for i, arg in enumerate(argv):
        m = _ASSIGN.match(arg)
        if m and is_secret_key(m.group(1)):
            raise CredentialsError(f"{where} sets {m.group(1)}; {WHERE}")
        value = None
        if arg.startswith("--storage-options="):
            value = arg.split("=", 1)[1]
        elif arg == "--storage-options" and i + 1 < len(argv):
            value = argv[i + 1]
        if value is not None and not value.startswith("@"):
            try:
                refuse_secrets(json.loads(value), f"{where}: --storage-options")
            except ValueError as exc:
                if isinstance(exc, CredentialsError):
                    raise
        if arg == "--set" and i + 1 < len(argv):
            try:
                refuse_secret_sets([argv[i + 1]])
            except CredentialsError as exc:
                raise CredentialsError(f"{where}: {exc}") from None
    for part in ("runtime_env", "metadata"):
        keys = secret_paths(fields.get(part))
        if keys:
            raise CredentialsError(f"job {source}: {part} (shown in the Ray dashboard) holds credentials "
                                   f"({', '.join(repr(k) for k in keys)}); give them to the cluster's nodes "
                                   f"instead (Kubernetes secrets, the environment of the Slurm job); {WHERE}")


def run_settings():
    """wandb settings for every run the service creates: quiet, and nothing of the process in the run file.

    ``x_disable_meta``: no system metadata, whose ``args`` is the process command line verbatim (``wandb sync``
    uploads it); ``disable_code``/``save_code=False``/``disable_git``: no program source, diff or git state.
    """
    import wandb

    return wandb.Settings(console="off", silent=True, disable_git=True, save_code=False, disable_code=True,
                          x_disable_meta=True, x_disable_stats=True, x_save_requirements=False)
