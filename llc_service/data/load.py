"""DATA URI → ``TokenData``: the one entry point of the data layer.

Two kinds of DATA are accepted, decided per file by its columns:

* ``input_ids``: pre-tokenized rows, all the same length (any integer width; converted to int64);
* a text column (default ``text``): tokenized with the checkpoint's tokenizer into blocks of ``seq_len``.

Every problem is a ``DataError`` naming the file, raised before any sampling starts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from llc_service.data import files, read, tokenize
from llc_service.data.errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenData:
    dataset: Any  # TokenDataset: rows are {"input_ids": LongTensor[L]}
    fingerprint: str  # 16 hex chars; same files + same settings -> same value
    num_rows: int


def load_token_data(data_uri, *, tokenizer, vocab_size: int | None, seq_len: int, text_column: str = "text",
                    max_rows: int | None = None, storage_options: dict | None = None, cache_dir=None,
                    min_rows: int = 1) -> TokenData:
    """Load DATA as fixed-length token rows.

    ``vocab_size`` bounds the ids (None skips that check); ``max_rows`` keeps the first rows (files in name
    order; for text, the first blocks); ``min_rows`` refuses DATA with fewer rows (pass the batch size).
    ``cache_dir`` holds tokenized text (default: a folder under the system temp dir).
    """
    import numpy as np
    import torch

    from llc_service.data.dataset import TokenDataset

    if seq_len < 2:
        raise DataError(f"seq_len must be >= 2, got {seq_len}")
    if max_rows is not None and max_rows < 1:
        raise DataError(f"max_rows must be >= 1 or None, got {max_rows}")
    fs, data_files, fp = files.identify(data_uri, storage_options, seq_len=seq_len, text_column=text_column,
                                        max_rows=max_rows)

    columns = _read_columns(fs, data_files, text_column, max_rows)
    if not columns:
        raise DataError(f"data {data_uri} holds no rows")
    if columns[0][1] == read.IDS:
        blocks = _id_rows(columns, vocab_size, max_rows)
    else:
        blocks = _text_blocks([(f, c) for f, _, c in columns], str(data_uri), fp, tokenizer, vocab_size, seq_len,
                              max_rows, cache_dir)
    dataset = TokenDataset(torch.from_numpy(np.ascontiguousarray(blocks, dtype=np.int64)))
    if len(dataset) < min_rows:
        raise DataError(f"data {data_uri} has {len(dataset)} rows, fewer than the {min_rows} required")
    return TokenData(dataset, fp, len(dataset))


def check_batch(token_data: TokenData, batch_size: int, data_uri: str = "DATA") -> None:
    """Refuse data with fewer rows than one minibatch (the sampler never pads or repeats within a batch)."""
    if token_data.num_rows < batch_size:
        raise DataError(f"data {data_uri} has {token_data.num_rows} rows, fewer than one batch "
                        f"(batch_size={batch_size}); lower batch_size or add data")


def _read_columns(fs, data_files, text_column: str, max_rows: int | None) -> list:
    """[(file, column name, array)] for the non-empty files; all files must be of one kind."""
    out, rows = [], 0
    for f in data_files:
        name, column = read.read_column(fs, f, text_column)
        if len(column) == 0:
            log.info("data file %s holds no rows; skipped", f.name)
            continue
        if out and (name == read.IDS) != (out[0][1] == read.IDS):
            raise DataError(f"data file {f.name} has column {name!r} but {out[0][0].name} has {out[0][1]!r}; "
                            "all files must be pre-tokenized or all text")
        out.append((f, name, column))
        rows += len(column)
        if name == read.IDS and max_rows is not None and rows >= max_rows:
            break  # enough pre-tokenized rows; text rows are documents, not blocks, so all are read
    return out


def _id_rows(columns: list, vocab_size: int | None, max_rows: int | None):
    """Validated (rows, L) int64 array from pre-tokenized files."""
    import numpy as np

    parts, first = [], None
    for f, _, column in columns:
        arr = read.ids_to_int64(column, f)
        length = read.check_lengths(arr, f)
        if first is None:
            first = (f, length)
        elif length != first[1]:
            raise DataError(f"data file {f.name}: rows have {length} tokens but {first[0].name} has {first[1]}; "
                            "every row must have the same length")
        values = arr.flatten().to_numpy().reshape(-1, length)
        read.check_id_range(values, vocab_size, f"data file {f.name}")
        parts.append(values)
    blocks = np.concatenate(parts)
    return blocks[:max_rows] if max_rows is not None else blocks


def _text_blocks(texts: list, data_uri: str, fp: str, tokenizer, vocab_size, seq_len, max_rows, cache_dir):
    """Tokenized blocks, from the cache when this (data, tokenizer, seq_len) was seen before."""
    import pyarrow as pa

    for f, column in texts:
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            raise DataError(f"data file {f.name}: the text column must hold strings, found {column.type}")
    if tokenizer is None:
        raise DataError(f"data {data_uri} has a text column but no tokenizer was given (the checkpoint ships none); "
                        "set the `tokenizer` config field or provide pre-tokenized `input_ids`")
    path = tokenize.cache_path(cache_dir, fp, tokenize.tokenizer_identity(tokenizer), seq_len)
    blocks = tokenize.load_cached(path)
    if blocks is not None:
        log.info("token blocks from cache %s", path)
    else:
        column = pa.chunked_array([c for _, col in texts for c in col.cast(pa.large_string()).chunks],
                                  type=pa.large_string())
        blocks = tokenize.tokenize_blocks(column, tokenizer, seq_len, max_blocks=max_rows)
        if blocks.shape[0] == 0:
            raise DataError(f"data {data_uri}: the text holds fewer than seq_len={seq_len} tokens (not one block)")
        tokenize.save_cached(path, blocks)
    read.check_id_range(blocks, vocab_size, f"data {data_uri} (tokenized)")
    return blocks
