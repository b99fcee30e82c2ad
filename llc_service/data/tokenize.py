"""Text → fixed-length token blocks, cached on disk.

Documents are tokenized with ``datasets.Dataset.map`` (batched), joined into one stream with the tokenizer's
EOS between documents, and cut into blocks of ``seq_len``; the tail shorter than a block is dropped, so every
row is a full training-like context. Tokenizing is the slow part of loading text, and every checkpoint of a run
is measured on the same data, so the blocks are cached under a key of (data fingerprint, tokenizer identity,
seq_len): the second checkpoint loads them from disk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

DOCS_PER_CHUNK = 4096
"""Documents tokenized per round, so ``max_rows`` stops the work early on a large corpus."""


def tokenizer_identity(tokenizer) -> str:
    """A hash that changes whenever the tokenizer would produce different ids.

    Fast tokenizers serialise completely (vocab, merges, normaliser, post-processor); slow ones fall back to
    their vocabulary plus special tokens.
    """
    h = hashlib.sha256(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode())
    else:
        h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    specials = getattr(tokenizer, "special_tokens_map", {})
    h.update(json.dumps([specials, getattr(tokenizer, "eos_token_id", None)], sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def default_cache_dir() -> Path:
    return Path(tempfile.gettempdir()) / "llc-service-token-cache"


def cache_path(cache_dir: str | os.PathLike | None, data_fingerprint: str, tok_id: str, seq_len: int) -> Path:
    key = hashlib.sha256(f"{data_fingerprint}|{tok_id}|{seq_len}".encode()).hexdigest()[:24]
    return Path(cache_dir or default_cache_dir()) / f"blocks-{key}.npy"


def load_cached(path: Path):
    """The cached (blocks, seq_len) int array, or None when absent or unreadable (then it is rebuilt)."""
    import numpy as np

    if not path.exists():
        return None
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - a torn or foreign file: rebuild rather than fail the measurement
        log.warning("ignoring unreadable token cache %s (%s)", path, exc)
        return None


def save_cached(path: Path, blocks) -> None:
    """Atomic: a temp file beside the target, then ``os.replace`` (concurrent writers each win whole)."""
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "wb") as fh:
            np.save(fh, blocks, allow_pickle=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def tokenize_blocks(texts, tokenizer, seq_len: int, max_blocks: int | None = None):
    """A pyarrow string array of documents → int array (blocks, seq_len), EOS between documents."""
    import datasets
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        log.warning("tokenizer has no EOS token: documents are concatenated without a separator")

    def encode(batch):
        ids = tokenizer(batch["text"], verbose=False)["input_ids"]
        return {"ids": [x + [eos] for x in ids] if eos is not None else ids}

    texts = pc.drop_null(texts)
    log.info("tokenizing %d documents into blocks of %d tokens", len(texts), seq_len)
    docs = datasets.Dataset(pa.table({"text": texts}))
    need = None if max_blocks is None else max_blocks * seq_len
    pieces, total = [], 0
    with _quiet_datasets():
        for start in range(0, len(docs), DOCS_PER_CHUNK):
            part = docs.select(range(start, min(start + DOCS_PER_CHUNK, len(docs))))
            mapped = part.map(encode, batched=True, batch_size=256, remove_columns=["text"],
                              keep_in_memory=True, load_from_cache_file=False)
            flat = mapped.data.column("ids").combine_chunks().flatten().to_numpy(zero_copy_only=False)
            pieces.append(flat.astype(np.int64, copy=False))
            total += flat.size
            if need is not None and total >= need:
                break
    ids = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
    n = ids.size // seq_len
    if max_blocks is not None:
        n = min(n, max_blocks)
    return ids[: n * seq_len].reshape(n, seq_len)


@contextmanager
def _quiet_datasets():
    """No per-chunk progress bars from ``Dataset.map`` (one measurement log line is enough)."""
    from datasets.utils import logging as ds_logging

    was_on = ds_logging.is_progress_bar_enabled()
    if was_on:
        ds_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            ds_logging.enable_progress_bar()
