"""Read one column of every data file with pyarrow through fsspec, and check token ids.

pyarrow over an fsspec file object works the same for local paths, ``s3://`` and ``memory://`` (``datasets``'
own remote loading does not work offline). Every check names the file it failed on, because a folder of a
thousand shards is useless to debug from "a row is ragged".
"""

from __future__ import annotations

from llc_service.data.errors import DataError
from llc_service.data.files import DataFile

IDS = "input_ids"


def _open(fs, f: DataFile):
    compression = "gzip" if f.path.lower().endswith(".gz") else None
    return fs.open(f.path, "rb", compression=compression)


def _parquet_file(fs, f: DataFile):
    import pyarrow.parquet as pq

    handle = _open(fs, f)
    try:
        return handle, pq.ParquetFile(handle)
    except Exception as exc:  # noqa: BLE001
        handle.close()
        raise DataError(f"data file {f.name}: not a readable Parquet file ({exc})") from None


def _read_json(fs, f: DataFile):
    """A JSON-lines file as a pyarrow Table, in one block so a long document never straddles two."""
    import pyarrow.json as pj

    if f.size == 0:
        raise DataError(f"data file {f.name} is empty (0 bytes)")
    block = max(1 << 20, min(f.size + 1, 256 << 20))
    try:
        with _open(fs, f) as handle:
            table = pj.read_json(handle, read_options=pj.ReadOptions(block_size=block))
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"data file {f.name}: not readable as JSON lines ({exc})") from None
    if table.num_rows == 0:
        raise DataError(f"data file {f.name} holds no rows")
    return table


def read_column(fs, f: DataFile, text_column: str):
    """(column name, chunked array) of the column this file contributes: ``input_ids`` or the text column.

    Parquet reads only that column (the footer says which exist); JSON has no footer, so it is parsed whole.
    """
    if f.format == "parquet":
        if f.size == 0:
            raise DataError(f"data file {f.name} is empty (0 bytes)")
        handle, pf = _parquet_file(fs, f)
        with handle:
            name = choose_column(pf.schema_arrow.names, f, text_column)
            return name, pf.read(columns=[name]).column(name)
    table = _read_json(fs, f)
    name = choose_column(table.column_names, f, text_column)
    return name, table.column(name)


def choose_column(names: list[str], f: DataFile, text_column: str) -> str:
    """``input_ids`` wins over text; neither is an error listing what the file does have."""
    if IDS in names:
        return IDS
    if text_column in names:
        return text_column
    raise DataError(f"data file {f.name} has neither an {IDS!r} column nor a {text_column!r} column "
                    f"(columns: {', '.join(names) or 'none'})")


def ids_to_int64(column, f: DataFile):
    """A list-of-integers column as a flat list<int64> array; refuses floats, nulls and strings."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    t = arr.type
    if not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)):
        raise DataError(f"data file {f.name}: column {IDS!r} must hold lists of integers, found {t}")
    if not (pa.types.is_integer(t.value_type) or pa.types.is_null(t.value_type)):
        raise DataError(f"data file {f.name}: column {IDS!r} must hold integers, found {t.value_type}")
    if arr.null_count:
        row = pc.index(pc.is_null(arr), True).as_py()
        raise DataError(f"data file {f.name}: row {row} of {IDS!r} is null")
    arr = arr.cast(pa.list_(pa.int64()))
    if pc.any(pc.is_null(arr.flatten())).as_py():
        raise DataError(f"data file {f.name}: column {IDS!r} holds null token ids")
    return arr


def check_lengths(arr, f: DataFile) -> int:
    """All rows of equal length (the sampler stacks them); returns that length."""
    import pyarrow.compute as pc

    lengths = pc.list_value_length(arr)
    lo, hi = pc.min_max(lengths).values()
    lo, hi = lo.as_py(), hi.as_py()
    if lo != hi:
        first = lengths[0].as_py()
        row = pc.index(pc.not_equal(lengths, first), True).as_py()
        raise DataError(f"data file {f.name}: {IDS!r} rows are ragged (row 0 has {first} tokens, row {row} has "
                        f"{lengths[row].as_py()}); every row must have the same length")
    if lo < 2:
        raise DataError(f"data file {f.name}: {IDS!r} rows have {lo} tokens; a causal LM loss needs at least 2")
    return lo


def check_id_range(values, vocab_size: int | None, where: str) -> None:
    """Every id in [0, vocab_size): an out-of-range id is an embedding index error deep inside the model."""
    import numpy as np

    if values.size == 0:
        return
    lo, hi = int(values.min()), int(values.max())
    if lo < 0 or (vocab_size is not None and hi >= vocab_size):
        bad = lo if lo < 0 else hi
        pos = int(np.argmax(values == bad))
        limit = f"[0, {vocab_size})" if vocab_size is not None else ">= 0"
        raise DataError(f"{where}: token id {bad} (flat position {pos}) is outside {limit}; "
                        "is DATA tokenized for this model's vocabulary?")
