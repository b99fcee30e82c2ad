"""Every way DATA can be wrong gives a DataError that names the file and the problem."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from llc_service.data import DataError, load_token_data


def load(path, **kw):
    return load_token_data(str(path), **{"tokenizer": None, "vocab_size": 10, "seq_len": 4, **kw})


def parquet(path, **cols):
    pq.write_table(pa.table(cols), path)
    return path


def test_neither_input_ids_nor_text_column(tmp_path):
    p = parquet(tmp_path / "bad.parquet", tokens=pa.array([[1, 2]]), label=pa.array([0]))
    with pytest.raises(DataError, match=r"bad\.parquet has neither an 'input_ids' column nor a 'text' column "
                                        r"\(columns: tokens, label\)"):
        load(p)


def test_custom_text_column_is_named_in_the_error(tmp_path):
    p = parquet(tmp_path / "t.parquet", text=pa.array(["x"]))
    with pytest.raises(DataError, match="nor a 'content' column"):
        load(p, text_column="content")


def test_ragged_input_ids(tmp_path):
    p = parquet(tmp_path / "ragged.parquet", input_ids=pa.array([[1, 2, 3], [1, 2, 3], [1, 2]]))
    with pytest.raises(DataError, match=r"ragged\.parquet: 'input_ids' rows are ragged \(row 0 has 3 tokens, "
                                        r"row 2 has 2\)"):
        load(p)


def test_rows_of_different_length_across_files(tmp_path):
    parquet(tmp_path / "a.parquet", input_ids=pa.array([[1, 2, 3]]))
    parquet(tmp_path / "b.parquet", input_ids=pa.array([[1, 2]]))
    with pytest.raises(DataError, match=r"b\.parquet: rows have 2 tokens but a\.parquet has 3"):
        load(tmp_path)


@pytest.mark.parametrize("bad", [10, 99, -1])
def test_ids_outside_vocab(tmp_path, bad):
    p = parquet(tmp_path / "ids.parquet", input_ids=pa.array([[1, 2], [3, bad]], pa.list_(pa.int32())))
    with pytest.raises(DataError, match=rf"ids\.parquet: token id {bad} .* outside \[0, 10\)"):
        load(p)


def test_tokenized_text_outside_a_smaller_model_vocab(tmp_path, tokenizer):
    p = tmp_path / "t.jsonl"
    p.write_text(json.dumps({"text": "def f(x):\n    return x * 2\n" * 50}) + "\n")
    with pytest.raises(DataError, match=r"outside \[0, 100\); is DATA tokenized for this model"):
        load(p, tokenizer=tokenizer, vocab_size=100, cache_dir=tmp_path / "c")


def test_float_ids_and_null_rows(tmp_path):
    p = parquet(tmp_path / "f.parquet", input_ids=pa.array([[1.0, 2.0]]))
    with pytest.raises(DataError, match=r"f\.parquet: column 'input_ids' must hold integers, found double"):
        load(p)
    p = parquet(tmp_path / "n.parquet", input_ids=pa.array([[1, 2], None]))
    with pytest.raises(DataError, match=r"n\.parquet: row 1 of 'input_ids' is null"):
        load(p)


def test_empty_file_and_empty_folder_and_missing_path(tmp_path):
    (tmp_path / "empty.parquet").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.parquet is empty \(0 bytes\)"):
        load(tmp_path / "empty.parquet")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataError, match=r"empty\.jsonl is empty \(0 bytes\)"):
        load(tmp_path / "empty.jsonl")
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="holds no .parquet or .jsonl files"):
        load(tmp_path / "none")
    with pytest.raises(DataError, match="no such file or folder"):
        load(tmp_path / "missing.parquet")


def test_zero_row_files_only(tmp_path):
    parquet(tmp_path / "z.parquet", input_ids=pa.array([], pa.list_(pa.int64())))
    with pytest.raises(DataError, match="holds no rows"):
        load(tmp_path)


def test_not_parquet_and_not_jsonl(tmp_path):
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=r"junk\.parquet: not a readable Parquet file"):
        load(tmp_path / "junk.parquet")
    (tmp_path / "junk.jsonl").write_text("[1, 2\n")
    with pytest.raises(DataError, match=r"junk\.jsonl: not readable as JSON lines"):
        load(tmp_path / "junk.jsonl")
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="unknown format"):
        load(tmp_path / "data.csv")


def test_text_without_tokenizer(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text(json.dumps({"text": "hello"}) + "\n")
    with pytest.raises(DataError, match="has a text column but no tokenizer was given"):
        load(p)


def test_text_shorter_than_one_block(tmp_path, tokenizer):
    p = tmp_path / "t.jsonl"
    p.write_text(json.dumps({"text": "x = 1"}) + "\n")
    with pytest.raises(DataError, match="fewer than seq_len=64 tokens"):
        load(p, tokenizer=tokenizer, vocab_size=300, seq_len=64, cache_dir=tmp_path / "c")


def test_mixed_ids_and_text_files(tmp_path):
    parquet(tmp_path / "a.parquet", input_ids=pa.array([[1, 2]]))
    parquet(tmp_path / "b.parquet", text=pa.array(["x"]))
    with pytest.raises(DataError, match=r"b\.parquet has column 'text' but a\.parquet has 'input_ids'"):
        load(tmp_path)


def test_is_a_value_error():
    assert issubclass(DataError, ValueError)
