"""The tokenizer that goes with a checkpoint: its own if it ships one, else the configured fallback, else None.

None is not an error here: token-id data needs no tokenizer, and the data loader raises when text needs one.
A tokenizer that exists but does not load is an error (``CheckpointError``): silently falling back would
tokenize the data differently from training.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from llc_service.checkpoint.errors import CheckpointError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model", "spiece.model")


def has_tokenizer(folder: str | os.PathLike) -> bool:
    return any(Path(folder, name).is_file() for name in TOKENIZER_FILES)


def load_tokenizer_dir(label: str, folder: str | os.PathLike):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    except Exception as e:  # noqa: BLE001 - transformers raises many types; surface the message
        raise CheckpointError(label, f"tokenizer in {folder} does not load: {type(e).__name__}: {e}") from e


def resolve_tokenizer(uri: str, local_dir: str | os.PathLike, fallback: Any = None,
                      storage_options: dict | None = None, cache_root: str | os.PathLike | None = None):
    """Checkpoint's tokenizer, else ``fallback`` (a loaded tokenizer, a folder path or a URI), else None."""
    if has_tokenizer(local_dir):
        return load_tokenizer_dir(uri, local_dir)
    if fallback is None:
        return None
    if not isinstance(fallback, (str, os.PathLike)):
        return fallback  # already a tokenizer object
    from llc_service.storage import is_local, open_fs

    if is_local(fallback):
        return load_tokenizer_dir(uri, os.path.expanduser(os.fspath(fallback).removeprefix("file://")))
    # a remote tokenizer folder: small files, copied once next to the checkpoint cache (temp name, then rename)
    target = Path(cache_root or ".", ".tokenizers", hashlib.sha256(os.fspath(fallback).encode()).hexdigest()[:16])
    if not target.is_dir():
        fs, path = open_fs(fallback, storage_options)
        tmp = target.with_name(f"{target.name}.tmp-{uuid.uuid4().hex[:8]}")
        tmp.mkdir(parents=True)
        try:
            for info in fs.ls(path, detail=True):
                name = os.path.basename(info["name"].rstrip("/"))
                if info.get("type") == "file" and not name.endswith((".py", ".bin", ".pt", ".pth")):
                    fs.get_file(info["name"], str(tmp / name))
            try:
                os.rename(tmp, target)
            except OSError:  # another process won the race
                pass
        except FileNotFoundError as e:
            raise CheckpointError(uri, f"tokenizer {fallback} not found") from e
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return load_tokenizer_dir(uri, target)
