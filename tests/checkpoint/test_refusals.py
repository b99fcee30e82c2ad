"""Every way a checkpoint is refused, each with a CheckpointError that names the checkpoint and the reason."""

import pytest
import torch

from llc_service.checkpoint import CheckpointError, load_checkpoint
from tests.helpers.checkpoints import (
    make_checkpoint,
    make_pickle_checkpoint,
    set_config,
    shard_files,
    tiny_model,
    write_nan_weights,
)


def _truncate(folder):
    path = folder / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])


def _append_garbage(folder):
    with open(folder / "model.safetensors", "ab") as f:
        f.write(b"\0" * 64)


def _garbage_header(folder):
    (folder / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!" + b"\0" * 64)


def _delete_shard(folder):
    shard_files(folder)[1].unlink()


def _torch_save_only(folder):
    (folder / "model.safetensors").unlink()
    torch.save(tiny_model().state_dict(), folder / "model.pt")


def _drop_tensor(folder):
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(folder / "model.safetensors"))
    del tensors[sorted(tensors)[-1]]
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})


CASES = {
    "truncated safetensors": (_truncate, False, "truncated or corrupt"),
    "safetensors longer than its header": (_append_garbage, False, "truncated or corrupt"),
    "unreadable safetensors header": (_garbage_header, False, "truncated or corrupt"),
    "shard deleted": (_delete_shard, True, "shards listed in model.safetensors.index.json are missing"),
    "pickle only (torch.save)": (_torch_save_only, False, "only pickle weights (model.pt)"),
    "auto_map": (lambda f: set_config(f, auto_map={"AutoModelForCausalLM": "modeling_x.X"}), False, "auto_map"),
    "python file": (lambda f: (f / "modeling_x.py").write_text("import os\n"), False, "modeling_x.py"),
    "python file in subfolder": (lambda f: (f / "code").mkdir() or (f / "code" / "x.py").write_text(""), False,
                                 "code/x.py"),
    "unknown model_type": (lambda f: set_config(f, model_type="totally_new_arch"), False, "'totally_new_arch'"),
    "no model_type": (lambda f: set_config(f, model_type=""), False, "no model_type"),
    "NaN weights": (write_nan_weights, False, "non-finite"),
    "missing config.json": (lambda f: (f / "config.json").unlink(), False, "config.json missing"),
    "weights missing from the files": (_drop_tensor, False, "not in the files"),
    "shape mismatch (transformers error)": (lambda f: set_config(f, intermediate_size=256), False,
                                           "transformers could not load it"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_refused_locally(tmp_path, case):
    damage, sharded, message = CASES[case]
    folder = make_checkpoint(tmp_path / "run" / "step1", sharded=sharded, tokenizer=False)
    damage(folder)
    with pytest.raises(CheckpointError, match="checkpoint .*step1") as info:
        load_checkpoint(str(folder))
    assert message in str(info.value)


def test_pickle_only_save_pretrained_style_is_refused(tmp_path):
    folder = make_pickle_checkpoint(tmp_path / "legacy")
    with pytest.raises(CheckpointError, match=r"only pickle weights \(pytorch_model.bin\)"):
        load_checkpoint(str(folder))


def test_missing_folder_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist or is empty"):
        load_checkpoint(str(tmp_path / "nope"))


@pytest.mark.parametrize("case", ["truncated safetensors", "shard deleted", "NaN weights", "auto_map"])
def test_refused_from_s3_and_cache_left_clean(tmp_path, s3_store, case):
    damage, sharded, message = CASES[case]
    folder = make_checkpoint(tmp_path / "build", sharded=sharded, tokenizer=False)
    damage(folder)
    uri = s3_store.put(folder, "run/step2")
    cache = tmp_path / "cache"
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(uri, storage_options=s3_store.storage_options, cache_dir=cache)
    leases = cache / ".leases"
    assert not leases.exists() or not any(p for d in leases.iterdir() for p in d.iterdir())  # no lease left


def test_pickle_only_on_s3_is_refused_before_any_download(tmp_path, s3_store):
    uri = s3_store.put(make_pickle_checkpoint(tmp_path / "legacy"), "run/step3")
    cache = tmp_path / "cache"
    with pytest.raises(CheckpointError, match="only pickle weights"):
        load_checkpoint(uri, storage_options=s3_store.storage_options, cache_dir=cache)
    assert not cache.exists()
