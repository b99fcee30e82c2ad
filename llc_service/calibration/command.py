"""``llc-service calibrate``: load a checkpoint and its data like ``measure`` does, run the grid, write the files."""

from __future__ import annotations

import dataclasses
import sys

RECOMMENDED_DROP = ("storage_options", "progress")
"""Left out of recommended.yaml: credentials never go into a file, the progress bar is a per-run choice."""


def write_outputs(result, out_dir: str, base_cfg, storage_options: dict | None = None) -> dict[str, str]:
    """DIR/calibration.parquet, DIR/calibration.png and (if a point was chosen) DIR/recommended.yaml."""
    import fsspec
    import yaml

    from llc_service.calibration.plot import plot_calibration

    opts = dict(storage_options or {})
    fs, root = fsspec.core.url_to_fs(str(out_dir), **opts)
    fs.makedirs(root, exist_ok=True)
    base = str(out_dir).rstrip("/")
    paths = {"table": f"{base}/calibration.parquet", "plot": f"{base}/calibration.png"}
    with fsspec.open(paths["table"], "wb", **opts) as f:
        result.table.to_parquet(f, index=False)
    plot_calibration(result, paths["plot"], storage_options=opts)
    if result.recommended is not None:
        values = {k: v for k, v in dataclasses.asdict(result.recommended).items() if k not in RECOMMENDED_DROP}
        text = ("# written by llc-service calibrate: " + result.reason.replace("\n", " ") + "\n"
                + yaml.safe_dump(values, sort_keys=False))
        paths["recommended"] = f"{base}/recommended.yaml"
        with fsspec.open(paths["recommended"], "w", **opts) as f:
            f.write(text)
    return paths


def run(checkpoint: str, data_uri: str, out_dir: str, cfg, grid: dict, processes: int = 1) -> int:
    from llc_service.bucket import inspect_checkpoint
    from llc_service.calibration import calibrate
    from llc_service.calibration.plot import format_table
    from llc_service.checkpoint import load_checkpoint
    from llc_service.data import load_token_data

    ref = inspect_checkpoint(checkpoint, storage_options=cfg.storage_options, marker_file=cfg.marker_file)
    if ref.status != "complete":
        print(f"llc-service calibrate: checkpoint {ref.uri} is incomplete ({ref.reason})", file=sys.stderr)
        return 1
    with load_checkpoint(ref, storage_options=cfg.storage_options, cache_dir=cfg.cache_dir,
                         cache_max_gb=cfg.cache_max_gb, tokenizer=cfg.tokenizer) as loaded:
        vocab = getattr(loaded.model.config, "vocab_size", None)
        data = load_token_data(data_uri, tokenizer=loaded.tokenizer, vocab_size=vocab, seq_len=cfg.seq_len,
                               text_column=cfg.text_column, max_rows=cfg.max_rows,
                               storage_options=cfg.storage_options, cache_dir=cfg.cache_dir, min_rows=cfg.batch_size)
        result = calibrate(loaded.model, data.dataset, cfg, grid=grid, processes=processes)
    paths = write_outputs(result, out_dir, cfg, cfg.storage_options)
    print(format_table(result.table))
    if result.recommended is None:
        print(f"no recommendation: {result.reason}")
        print(f"table and plot: {paths['table']}, {paths['plot']}")
        return 1
    print(f"recommended {result.reason}")
    print(f"config: {paths['recommended']} (use with measure/watch --config)")
    return 0
