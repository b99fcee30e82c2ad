"""DATA → token rows: pre-tokenized Parquet, JSONL text, folders, S3, the cache and the fingerprint."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from llc_service.data import DataError, TokenData, check_batch, load_token_data
from llc_service.demo.assets import stdlib_text


def write_ids(path, rows, type_=pa.int32()):
    pq.write_table(pa.table({"input_ids": pa.array(rows, pa.list_(type_))}), path)
    return path


def write_jsonl(path, docs, key="text"):
    with open(path, "w") as f:
        for d in docs:
            f.write(json.dumps({key: d}) + "\n")
    return path


def test_parquet_int32_ids_become_long_rows(tmp_path):
    rows = np.arange(40, dtype=np.int32).reshape(10, 4).tolist()
    path = write_ids(tmp_path / "ids.parquet", rows)
    td = load_token_data(str(path), tokenizer=None, vocab_size=40, seq_len=8)
    assert isinstance(td, TokenData) and td.num_rows == 10 == len(td.dataset)
    row = td.dataset[3]
    assert set(row) == {"input_ids"} and row["input_ids"].dtype == torch.long
    assert row["input_ids"].tolist() == rows[3]
    assert len(td.fingerprint) == 16 and int(td.fingerprint, 16) >= 0
    # batched fetch as a DataLoader does it
    batch = next(iter(torch.utils.data.DataLoader(td.dataset, batch_size=4)))
    assert batch["input_ids"].shape == (4, 4) and batch["input_ids"].dtype == torch.long


def test_folder_of_shards_in_name_order_hidden_files_skipped(tmp_path):
    write_ids(tmp_path / "part-1.parquet", [[5, 6, 7]] * 3, pa.int64())
    write_ids(tmp_path / "part-0.parquet", [[1, 2, 3]] * 2, pa.int16())
    write_ids(tmp_path / ".part-2.parquet", [[9, 9, 9, 9]])  # hidden: a writer's temp file
    (tmp_path / "_SUCCESS").write_text("")
    (tmp_path / "README.txt").write_text("not data")
    td = load_token_data(str(tmp_path), tokenizer=None, vocab_size=10, seq_len=3, max_rows=4)
    assert td.dataset.input_ids.tolist() == [[1, 2, 3]] * 2 + [[5, 6, 7]] * 2


def test_jsonl_text_is_tokenized_into_blocks_with_eos_between_docs(tmp_path, tokenizer):
    docs = stdlib_text(60_000)
    path = write_jsonl(tmp_path / "text.jsonl", docs)
    td = load_token_data(str(path), tokenizer=tokenizer, vocab_size=300, seq_len=32, cache_dir=tmp_path / "cache")
    stream = []
    for d in docs:
        stream += tokenizer(d)["input_ids"] + [tokenizer.eos_token_id]
    n = len(stream) // 32
    assert td.num_rows == n and td.dataset.input_ids.shape == (n, 32)
    assert td.dataset.input_ids.flatten().tolist() == stream[: n * 32]


def test_second_load_of_text_hits_the_cache(tmp_path, tokenizer, monkeypatch):
    from llc_service.data import tokenize

    path = write_jsonl(tmp_path / "text.jsonl", stdlib_text(30_000))
    kw = dict(tokenizer=tokenizer, vocab_size=300, seq_len=16, cache_dir=tmp_path / "cache")
    first = load_token_data(str(path), **kw)
    assert len(list((tmp_path / "cache").glob("blocks-*.npy"))) == 1

    def no_tokenizing(*a, **k):
        raise AssertionError("tokenized again despite the cache")

    monkeypatch.setattr(tokenize, "tokenize_blocks", no_tokenizing)
    second = load_token_data(str(path), **kw)
    assert second.fingerprint == first.fingerprint
    assert torch.equal(second.dataset.input_ids, first.dataset.input_ids)
    with pytest.raises(AssertionError):  # another seq_len is another cache entry
        load_token_data(str(path), **{**kw, "seq_len": 8})


def test_max_rows_on_text_takes_the_first_blocks(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "text.jsonl", stdlib_text(30_000))
    kw = dict(tokenizer=tokenizer, vocab_size=300, seq_len=16, cache_dir=tmp_path / "cache")
    full = load_token_data(str(path), **kw)
    few = load_token_data(str(path), max_rows=5, **kw)
    assert few.num_rows == 5 and torch.equal(few.dataset.input_ids, full.dataset.input_ids[:5])
    assert few.fingerprint != full.fingerprint


def test_fingerprint_follows_content_and_settings_not_location(tmp_path):
    a = tmp_path / "a"
    a.mkdir()
    write_ids(a / "x.parquet", [[1, 2, 3]] * 4)
    b = tmp_path / "b"
    shutil.copytree(a, b)
    def fp(p, **k):
        return load_token_data(str(p), tokenizer=None, vocab_size=10, seq_len=k.get("seq_len", 3)).fingerprint
    assert fp(a) == fp(b)
    assert fp(a) != fp(a, seq_len=4)
    write_ids(b / "x.parquet", [[1, 2, 4]] * 4)
    assert fp(a) != fp(b)


def test_s3_parquet_and_jsonl_via_moto(s3_bucket, tmp_path, tokenizer):
    import s3fs

    bucket, options = s3_bucket
    fs = s3fs.S3FileSystem(skip_instance_cache=True, **options)
    fs.put(str(write_ids(tmp_path / "ids.parquet", [[1, 2, 3, 4]] * 6)), f"{bucket}/ids/part-0.parquet")
    fs.put(str(write_jsonl(tmp_path / "t.jsonl", stdlib_text(20_000))), f"{bucket}/text/t.jsonl")
    before = json.dumps(options, sort_keys=True)

    ids = load_token_data(f"{bucket}/ids", tokenizer=None, vocab_size=5, seq_len=4, storage_options=options)
    assert ids.num_rows == 6 and ids.dataset[0]["input_ids"].tolist() == [1, 2, 3, 4]
    text = load_token_data(f"{bucket}/text/t.jsonl", tokenizer=tokenizer, vocab_size=300, seq_len=16,
                           storage_options=options, cache_dir=tmp_path / "cache")
    local = load_token_data(str(tmp_path / "t.jsonl"), tokenizer=tokenizer, vocab_size=300, seq_len=16,
                            cache_dir=tmp_path / "cache2")
    assert torch.equal(text.dataset.input_ids, local.dataset.input_ids)
    assert json.dumps(options, sort_keys=True) == before  # caller's storage_options untouched


def test_check_batch_and_min_rows(tmp_path):
    path = write_ids(tmp_path / "small.parquet", [[1, 2]] * 3)
    td = load_token_data(str(path), tokenizer=None, vocab_size=5, seq_len=2)
    check_batch(td, 3)
    with pytest.raises(DataError, match=r"3 rows, fewer than one batch \(batch_size=8\)"):
        check_batch(td, 8, str(path))
    with pytest.raises(DataError, match="fewer than the 8 required"):
        load_token_data(str(path), tokenizer=None, vocab_size=5, seq_len=2, min_rows=8)
