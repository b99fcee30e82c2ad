"""``load_checkpoint``: a checkpoint folder (local or remote) -> an fp32 model in eval mode, or a refusal.

Steps, each able to refuse with ``CheckpointError``:

1. list the folder (fresh) and refuse by file names (custom code, pickle-only weights, no config), then by
   ``config.json`` (no ``auto_map``, a ``model_type`` transformers knows) -- all before downloading weights;
2. remote folders: copy the files the model needs (never pickles such as ``optimizer.pt``) into the node's
   cache, keyed by fingerprint;
3. check every safetensors file (size matches its header, it opens, it holds what the index says);
4. ``from_pretrained(dtype=float32, use_safetensors=True, trust_remote_code=False, local_files_only=True)``;
   anything transformers raises becomes a ``CheckpointError`` carrying its message, and so do weights the
   architecture needs but the files lack (transformers would initialise them randomly);
5. refuse non-finite weights; find the tokenizer.

``release(loaded)`` (or ``with load_checkpoint(...) as loaded:``) drops the cache lease afterwards.
"""

from __future__ import annotations

import logging
import os
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llc_service.bucket.inspect import CONFIG, INDEX, PICKLE_SUFFIXES, fingerprint
from llc_service.bucket.ref import CheckpointRef
from llc_service.checkpoint.cache import CheckpointCache
from llc_service.checkpoint.errors import CheckpointError
from llc_service.checkpoint.tokenizer import resolve_tokenizer
from llc_service.checkpoint.validate import check_config, check_finite, check_names, check_safetensors, weight_files
from llc_service.storage import is_local, open_fs

log = logging.getLogger(__name__)


@dataclass
class LoadedCheckpoint:
    """A loaded model and what was learnt loading it. A context manager: leaving it calls ``release``."""

    model: Any
    tokenizer: Any
    model_type: str
    num_params: int
    local_dir: str
    uri: str = ""
    fingerprint: str = ""
    """Fingerprint of the files actually loaded (may differ from a stale ``CheckpointRef``'s)."""
    cache_root: str | None = None
    """Set when ``local_dir`` is a cache entry (remote checkpoint); None for local folders, loaded in place."""
    lease: str | None = None

    def __enter__(self) -> LoadedCheckpoint:
        return self

    def __exit__(self, *exc) -> None:
        release(self)


def load_checkpoint(ref: CheckpointRef | str | os.PathLike, *, storage_options: dict | None = None,
                    cache_dir: str | os.PathLike | None = None, cache_max_gb: float = 50,
                    tokenizer: Any = None) -> LoadedCheckpoint:
    """Load a checkpoint folder safely (see module docstring); raises ``CheckpointError`` on refusal."""
    loaded = fetch_checkpoint(ref, storage_options=storage_options, cache_dir=cache_dir, cache_max_gb=cache_max_gb)
    try:
        model = _load_model(loaded.uri, loaded.local_dir)
        attach_tokenizer(loaded, tokenizer, storage_options, cache_dir)
    except BaseException:
        release(loaded)
        raise
    loaded.model, loaded.model_type = model, model.config.model_type
    loaded.num_params = sum(p.numel() for p in model.parameters())
    return loaded


def attach_tokenizer(loaded: LoadedCheckpoint, fallback: Any, storage_options: dict | None = None,
                     cache_dir: str | os.PathLike | None = None) -> None:
    """``loaded.tokenizer``: the checkpoint's own, else ``fallback`` (see :func:`resolve_tokenizer`)."""
    loaded.tokenizer = resolve_tokenizer(loaded.uri, loaded.local_dir, fallback, storage_options,
                                         loaded.cache_root or cache_dir)


def fetch_checkpoint(ref: CheckpointRef | str | os.PathLike, *, storage_options: dict | None = None,
                     cache_dir: str | os.PathLike | None = None, cache_max_gb: float = 50) -> LoadedCheckpoint:
    """What :func:`load_checkpoint` does before building the model: the folder validated (names, config), local
    (copied into the node cache when remote), its fingerprint; ``model`` and ``tokenizer`` are None (see
    :func:`attach_tokenizer`). The sharded path builds the model itself (:mod:`llc_service.worker.sharded`).
    Release it (or use it as a context manager) when done."""
    uri = ref.uri if isinstance(ref, CheckpointRef) else os.fspath(ref)
    fs, path = open_fs(uri, storage_options)
    files = _list_files(fs, path)
    if not files:
        raise CheckpointError(uri, "folder does not exist or is empty")
    check_names(uri, sorted(files))
    check_config(uri, fs.cat_file(posixpath.join(path, CONFIG)))  # before copying anything
    top = {name: info for name, info in files.items() if "/" not in name}
    index_bytes = fs.cat_file(posixpath.join(path, INDEX)) if INDEX in top else None
    fp = fingerprint(top, index_bytes)
    if isinstance(ref, CheckpointRef) and ref.fingerprint != fp:
        log.warning("checkpoint %s changed since it was listed (fingerprint %s -> %s); loading the current files",
                    uri, ref.fingerprint, fp)

    cache = lease = None
    if is_local(uri):
        local_dir = path
    else:
        cache = CheckpointCache(cache_dir, cache_max_gb)
        needed = {name: info for name, info in top.items() if not name.endswith(PICKLE_SUFFIXES)}
        entry, lease = cache.fetch(fp, lambda tmp: _copy(fs, path, needed, tmp))
        local_dir = str(entry)
    return LoadedCheckpoint(
        model=None, tokenizer=None, model_type="", num_params=0, local_dir=local_dir, uri=uri, fingerprint=fp,
        cache_root=str(cache.root) if cache else None, lease=str(lease) if lease else None)


def release(loaded: LoadedCheckpoint, delete: bool = False) -> None:
    """Drop ``loaded``'s lease on its cache entry so eviction may reclaim it; ``delete`` removes it now unless
    another process on this node still holds it. Local checkpoints are never touched. Idempotent."""
    if loaded.cache_root is None:
        return
    cache = CheckpointCache(loaded.cache_root, max_gb=float("inf"))
    cache.release(loaded.fingerprint, Path(loaded.lease) if loaded.lease else None, delete=delete)
    loaded.lease = None


def _list_files(fs, path: str) -> dict[str, dict]:
    """Files under ``path`` by relative path (subfolders included: custom code may hide there); fresh."""
    try:
        found = fs.find(path, detail=True)
    except FileNotFoundError:
        return {}
    prefix = path.rstrip("/") + "/"
    return {p[len(prefix):]: info for p, info in found.items()
            if info.get("type", "file") == "file" and p.startswith(prefix)}


def _copy(fs, path: str, files: dict[str, dict], tmp: Path) -> None:
    """Copy ``files`` into ``tmp`` and check sizes (a file rewritten mid-copy would mix two checkpoints)."""
    names = sorted(files)
    try:
        fs.get([posixpath.join(path, n) for n in names], [str(tmp / n) for n in names])
    except FileNotFoundError as e:  # rewritten under us: worth a retry, unlike a missing checkpoint
        raise OSError(f"a file disappeared while copying ({e}); try again") from e
    for name in names:
        expected, got = files[name].get("size"), (tmp / name).stat().st_size
        if expected is not None and got != expected:
            raise OSError(f"{name} changed while copying ({got} bytes, listed {expected}); try again")


def check_weight_files(uri: str, local_dir: str) -> None:
    """Refuse missing shards and unreadable safetensors headers (before any weight is read)."""
    check_safetensors(uri, local_dir, weight_files(uri, local_dir))


def _load_model(uri: str, local_dir: str):
    import torch
    from transformers import AutoModelForCausalLM

    check_weight_files(uri, local_dir)
    try:
        model, info = AutoModelForCausalLM.from_pretrained(
            local_dir, dtype=torch.float32, use_safetensors=True, trust_remote_code=False, local_files_only=True,
            output_loading_info=True)
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - transformers raises many types; keep its message
        raise CheckpointError(uri, f"transformers could not load it: {type(e).__name__}: {e}") from e
    # transformers fills weights absent from the files with random values and only logs it: a measurement of
    # partly random weights is worse than none
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        raise CheckpointError(uri, f"{len(missing)} weights the architecture needs are not in the files "
                                   f"({', '.join(missing[:3])}); they would be randomly initialised")
    model.eval()
    check_finite(uri, model)
    return model
