"""Refuse unsafe or broken checkpoints before ``from_pretrained`` sees them, and NaN weights after.

Order matters: what can be decided from file *names* (custom code, pickle-only, no config) is checked on the
remote listing, before anything is downloaded; config and safetensors headers are checked on the local folder;
non-finite weights only once the model exists. Every refusal is a ``CheckpointError`` with a reason a user
can act on.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from llc_service.bucket.inspect import CONFIG, INDEX, PICKLE_SUFFIXES, SINGLE
from llc_service.bucket.safetensors_layout import OK, read_local_layout
from llc_service.checkpoint.errors import CheckpointError


def check_names(uri: str, rel_paths: list[str]) -> None:
    """Checks on the folder's file list (relative paths, subfolders included)."""
    code = sorted(p for p in rel_paths if p.endswith(".py"))
    if code:
        raise CheckpointError(uri, f"contains Python files ({', '.join(code[:3])}): custom model code is never run "
                                   "(trust_remote_code is off); use a checkpoint of a built-in architecture")
    top = {p for p in rel_paths if "/" not in p}
    if CONFIG not in top:
        raise CheckpointError(uri, f"{CONFIG} missing")
    has_safetensors = SINGLE in top or INDEX in top
    pickles = sorted(p for p in top if p.endswith(PICKLE_SUFFIXES))
    if not has_safetensors and pickles:
        raise CheckpointError(uri, f"only pickle weights ({', '.join(pickles[:3])}): pickle files can run code when "
                                   "loaded, so only safetensors are accepted; re-save with save_pretrained() "
                                   "(safetensors is its default)")
    if not has_safetensors:
        raise CheckpointError(uri, f"no {SINGLE} or {INDEX}")


def check_config(uri: str, text: str | bytes) -> dict:
    """Parse ``config.json`` and refuse custom code (``auto_map``) and architectures transformers does not know."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    try:
        config = json.loads(text)
    except ValueError as e:
        raise CheckpointError(uri, f"{CONFIG} unreadable: {e}") from e
    if not isinstance(config, dict):
        raise CheckpointError(uri, f"{CONFIG} is not a JSON object")
    if "auto_map" in config:
        raise CheckpointError(uri, f"{CONFIG} has auto_map (custom model code); custom code is never run")
    model_type = config.get("model_type")
    if not model_type:
        raise CheckpointError(uri, f"{CONFIG} has no model_type")
    if model_type not in CONFIG_MAPPING:
        raise CheckpointError(uri, f"unknown model_type {model_type!r}: not an architecture this transformers "
                                   "version knows (custom architectures are not loaded)")
    return config


def weight_files(uri: str, folder: str | os.PathLike) -> dict[str, list[str] | None]:
    """The safetensors files to load: ``{file: tensors the index expects in it (None: single file)}``."""
    folder = Path(folder)
    if (folder / SINGLE).exists():
        return {SINGLE: None}
    try:
        weight_map = json.loads((folder / INDEX).read_text())["weight_map"]
        if not isinstance(weight_map, dict) or not weight_map:
            raise ValueError("weight_map is empty or not a mapping")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(uri, f"{INDEX} unreadable: {e}") from e
    files: dict[str, list[str] | None] = {}
    for tensor, shard in weight_map.items():
        files.setdefault(shard, []).append(tensor)
    missing = sorted(s for s in files if not (folder / s).is_file())
    if missing:
        raise CheckpointError(uri, f"{len(missing)} of {len(files)} shards listed in {INDEX} are missing "
                                   f"({', '.join(missing[:3])})")
    return files


def check_safetensors(uri: str, folder: str | os.PathLike, files: dict[str, list[str] | None]) -> None:
    """Each file's size matches its header's offsets, safetensors opens it, and it holds what the index says."""
    from safetensors import safe_open

    for name, expected_tensors in sorted(files.items()):
        path = os.path.join(folder, name)
        try:
            layout = read_local_layout(path)
        except OSError as e:
            raise CheckpointError(uri, f"{name} unreadable: {e}") from e
        if layout.state != OK:
            raise CheckpointError(uri, f"{name} is truncated or corrupt ({layout.detail})")
        try:
            with safe_open(path, framework="pt") as f:
                keys = set(f.keys())
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
            raise CheckpointError(uri, f"{name} is not a valid safetensors file: {e}") from e
        if expected_tensors:
            absent = sorted(set(expected_tensors) - keys)
            if absent:
                raise CheckpointError(uri, f"{name} lacks {len(absent)} tensors the index puts there "
                                           f"({', '.join(absent[:3])})")


def check_finite(uri: str, model) -> None:
    """Refuse weights holding NaN or inf: every loss and gradient from them would be meaningless."""
    import torch

    refuse_nonfinite(uri, [name for name, p in model.named_parameters()
                           if p.is_floating_point() and not torch.isfinite(p).all()])


def refuse_nonfinite(uri: str, bad: list[str]) -> None:
    """Refuse a checkpoint whose parameters ``bad`` hold NaN or inf."""
    if bad:
        raise CheckpointError(uri, f"non-finite (NaN/inf) weights in {len(bad)} tensors ({', '.join(bad[:3])})")
