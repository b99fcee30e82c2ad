"""The canonical Parquet schemas of the results (version 2), and the only way rows become tables.

Readers infer a schema from the first file they open; a column that is null there (``wbic`` of a failed row)
would then clash with a later float. So writers build every table from these schemas and readers pass them too.
Changing a type or meaning bumps ``SCHEMA_VERSION``; adding a nullable column does not.
"""

from __future__ import annotations

from typing import Any, Mapping

SCHEMA_VERSION = 2
"""2: the ``component`` columns (refined LLC: one row per component of one measurement), chain diagnostics (rhat,
ess_bulk, mala_acceptance, mala_per_chain) and the λ̂ baseline; files of version 1 read as before, with those
columns null (see :func:`conform`)."""

STATUSES = ("ok", "failed", "diverged")
ERROR_KINDS = ("permanent", "transient")

# (name, type, nullable); types are strings resolved lazily so importing this module does not import pyarrow
_SUMMARY = [
    ("schema_version", "int32", False),
    ("run_id", "string", False),
    ("checkpoint_step", "int64", True),
    ("checkpoint_uri", "string", False),
    ("checkpoint_fingerprint", "string", False),
    ("config_hash", "string", False),
    ("component", "string", True),
    ("status", "string", False),
    ("error", "string", True),
    ("error_kind", "string", True),
    ("error_type", "string", True),
    ("attempt", "int32", False),
    ("llc_mean", "float64", True),
    ("llc_std", "float64", True),
    ("init_loss", "float64", True),
    ("llc_per_chain", "list<float64>", True),
    ("chain_status", "list<string>", True),
    ("chains_used", "list<int32>", True),
    ("num_chains_used", "int32", True),
    ("wbic", "float64", True),
    ("baseline", "string", True),
    ("rhat", "float64", True),
    ("ess_bulk", "float64", True),
    ("mala_acceptance", "float64", True),
    ("mala_per_chain", "list<float64>", True),
    ("sampler", "string", True),
    ("epsilon", "float64", True),
    ("nbeta", "float64", True),
    ("gamma", "float64", True),
    ("num_chains", "int32", True),
    ("num_draws", "int32", True),
    ("num_burnin", "int32", True),
    ("batch_size", "int32", True),
    ("seed", "int64", True),
    ("config_json", "string", True),
    ("data_uri", "string", True),
    ("data_fingerprint", "string", True),
    ("model_type", "string", True),
    ("num_params", "int64", True),
    ("weight_norm", "float64", True),
    ("weight_sketch", "list<float32>", True),
    ("device", "string", True),
    ("world_size", "int32", True),
    ("shard_size", "int32", True),
    ("peak_memory_mb", "float64", True),
    ("code_version", "string", True),
    ("started_at", "timestamp[us, UTC]", True),
    ("ended_at", "timestamp[us, UTC]", True),
    ("wall_seconds", "float64", True),
    ("component_params", "int64", True),
    ("component_seconds", "float64", True),
]

_DRAWS = [
    ("schema_version", "int32", False),
    ("run_id", "string", False),
    ("checkpoint_step", "int64", True),
    ("checkpoint_fingerprint", "string", False),
    ("config_hash", "string", False),
    ("component", "string", True),
    ("chain", "int32", False),
    ("draw", "int32", False),
    ("loss", "float64", True),
    ("running_llc", "float64", True),
]

SUMMARY_COLUMNS = tuple(name for name, _, _ in _SUMMARY)
DRAWS_COLUMNS = tuple(name for name, _, _ in _DRAWS)
IDENTITY_COLUMNS = ("run_id", "checkpoint_step", "checkpoint_fingerprint", "config_hash")
"""What names one measurement (and its result files)."""


def _arrow_type(spec: str):
    import pyarrow as pa

    if spec.startswith("list<"):
        return pa.list_(_arrow_type(spec[5:-1]))
    if spec == "timestamp[us, UTC]":
        return pa.timestamp("us", tz="UTC")
    return {"int32": pa.int32(), "int64": pa.int64(), "float32": pa.float32(), "float64": pa.float64(),
            "string": pa.string()}[spec]


def _schema(spec: list, kind: str):
    import pyarrow as pa

    version = str(SCHEMA_VERSION).encode()
    return pa.schema([pa.field(n, _arrow_type(t), nullable=null) for n, t, null in spec],
                     metadata={b"llc_service.table": kind.encode(), b"llc_service.schema_version": version})


_BUILT: dict = {}


def __getattr__(name: str):  # SUMMARY_SCHEMA / DRAWS_SCHEMA built on first use: pyarrow is imported only then
    if name in ("SUMMARY_SCHEMA", "DRAWS_SCHEMA"):
        if name not in _BUILT:
            _BUILT[name] = _schema(_SUMMARY, "summary") if name == "SUMMARY_SCHEMA" else _schema(_DRAWS, "draws")
        return _BUILT[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _plain(value: Any) -> Any:
    """numpy scalars/arrays and pandas timestamps → what pyarrow converts without guessing."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return value.tolist()
    if hasattr(value, "to_pydatetime"):
        return value.to_pydatetime()
    return value


def summary_table(rows: list[Mapping[str, Any]]):
    """Rows (dicts keyed by column name) → a Table with exactly SUMMARY_SCHEMA.

    Missing nullable columns become null and ``schema_version`` is filled in; unknown keys, missing required
    columns and values outside the allowed sets raise ``ValueError`` (a typo must not silently drop data).
    """
    import pyarrow as pa

    from llc_service.sinks.schema import SUMMARY_SCHEMA

    required = [n for n, _, null in _SUMMARY if not null and n != "schema_version"]
    filled = []
    for i, row in enumerate(rows):
        unknown = sorted(set(row) - set(SUMMARY_COLUMNS))
        if unknown:
            raise ValueError(f"summary row {i}: unknown column(s) {unknown}; the schema has {list(SUMMARY_COLUMNS)}")
        missing = [n for n in required if row.get(n) is None]
        if missing:
            raise ValueError(f"summary row {i}: required column(s) {missing} missing or null")
        if row.get("schema_version", SCHEMA_VERSION) != SCHEMA_VERSION:
            raise ValueError(f"summary row {i}: schema_version {row['schema_version']} != {SCHEMA_VERSION}")
        if row["status"] not in STATUSES:
            raise ValueError(f"summary row {i}: status {row['status']!r} not in {STATUSES}")
        if row.get("error_kind") not in (None, *ERROR_KINDS):
            raise ValueError(f"summary row {i}: error_kind {row['error_kind']!r} not in {ERROR_KINDS}")
        full = {name: _plain(row.get(name)) for name in SUMMARY_COLUMNS}
        full["schema_version"] = SCHEMA_VERSION
        filled.append(full)
    return pa.Table.from_pylist(filled, schema=SUMMARY_SCHEMA)


def draws_table(summary: Mapping[str, Any], loss_trace, running_llc=None):
    """One row per (chain, draw) of a (chains, draws) loss trace, keyed by the measurement's identity.

    ``summary`` supplies the identity columns (other keys are ignored); ``running_llc`` None gives null
    ``running_llc``. NaN losses (a diverged chain) are kept as NaN, not dropped: the draw grid stays complete.
    """
    import numpy as np
    import pyarrow as pa

    from llc_service.sinks.schema import DRAWS_SCHEMA

    loss = np.asarray(loss_trace, dtype=np.float64)
    if loss.ndim != 2:
        raise ValueError(f"loss_trace must be (chains, draws), got shape {loss.shape}")
    chains, draws = loss.shape
    n = chains * draws
    if running_llc is not None:
        running = np.asarray(running_llc, dtype=np.float64)
        if running.shape != loss.shape:
            raise ValueError(f"running_llc shape {running.shape} != loss_trace shape {loss.shape}")
        running_col = pa.array(running.reshape(-1), pa.float64())
    else:
        running_col = pa.nulls(n, pa.float64())
    missing = [k for k in IDENTITY_COLUMNS if k != "checkpoint_step" and summary.get(k) is None]
    if missing:
        raise ValueError(f"draws: identity column(s) {missing} missing or null")
    step = summary.get("checkpoint_step")
    cols = {
        "schema_version": pa.array(np.full(n, SCHEMA_VERSION, dtype=np.int32)),
        "run_id": pa.array([str(summary["run_id"])] * n, pa.string()),
        "checkpoint_step": pa.array([None if step is None else int(step)] * n, pa.int64()),
        "checkpoint_fingerprint": pa.array([str(summary["checkpoint_fingerprint"])] * n, pa.string()),
        "config_hash": pa.array([str(summary["config_hash"])] * n, pa.string()),
        "component": pa.array([summary.get("component")] * n, pa.string()),
        "chain": pa.array(np.repeat(np.arange(chains, dtype=np.int32), draws)),
        "draw": pa.array(np.tile(np.arange(draws, dtype=np.int32), chains)),
        "loss": pa.array(loss.reshape(-1), pa.float64()),
        "running_llc": running_col,
    }
    return pa.Table.from_pydict(cols, schema=DRAWS_SCHEMA)


def conform(table, schema):
    """A table read from disk → exactly ``schema``: known columns cast, missing ones null, extra ones dropped.

    Lets files written by an older (or newer, additive) schema version be read together.
    """
    import pyarrow as pa

    cols = []
    for field in schema:
        if field.name in table.column_names:
            cols.append(table.column(field.name).cast(field.type))
        else:
            cols.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(cols, schema=schema.with_metadata(None)).replace_schema_metadata(schema.metadata)
