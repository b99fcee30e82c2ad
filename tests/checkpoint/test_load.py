"""Loading real tiny checkpoints of each architecture and layout, from disk and from a moto S3 server."""

import json
import os

import pytest
import torch

from llc_service.bucket import inspect_checkpoint
from llc_service.checkpoint import LoadedCheckpoint, load_checkpoint, release
from tests.helpers.checkpoints import make_checkpoint, tiny_model, tiny_tokenizer


def _same_logits(loaded: LoadedCheckpoint, arch: str) -> bool:
    ids = torch.arange(16).view(2, 8)
    with torch.no_grad():
        return torch.allclose(loaded.model(input_ids=ids).logits, tiny_model(arch).eval()(input_ids=ids).logits)


@pytest.mark.parametrize("arch", ["gpt_neox", "gpt2", "llama"])
@pytest.mark.parametrize("sharded", [False, True])
def test_loads_each_architecture_plain_and_sharded(tmp_path, arch, sharded):
    folder = make_checkpoint(tmp_path / "run" / "step10", arch=arch, sharded=sharded)
    loaded = load_checkpoint(str(folder))
    assert loaded.model_type == arch
    assert loaded.num_params == sum(p.numel() for p in tiny_model(arch).parameters())
    assert not loaded.model.training
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())
    assert loaded.local_dir == str(folder) and loaded.cache_root is None  # local: loaded in place, no copy
    assert loaded.tokenizer is not None and loaded.tokenizer("def f():")["input_ids"]
    assert _same_logits(loaded, arch)


def test_trainer_checkpoint_with_optimizer_state_loads_from_ref(tmp_path):
    folder = make_checkpoint(tmp_path / "run" / "checkpoint-40", trainer_step=40)
    torch.save({"state": {}}, folder / "optimizer.pt")  # pickles next to safetensors are ignored, not loaded
    ref = inspect_checkpoint(str(folder))
    loaded = load_checkpoint(ref)
    assert (ref.step, loaded.model_type, loaded.fingerprint) == (40, "gpt_neox", ref.fingerprint)


def test_bf16_checkpoint_loads_as_fp32(tmp_path):
    from llc_service.demo import assets

    folder = tmp_path / "bf16"
    assets.tiny_model("llama", hidden=32, layers=1, heads=2).to(torch.bfloat16).save_pretrained(str(folder))
    assert json.loads((folder / "config.json").read_text()).get("dtype") == "bfloat16"
    loaded = load_checkpoint(str(folder))
    assert {p.dtype for p in loaded.model.parameters()} == {torch.float32}


def test_tokenizer_fallback_and_none(tmp_path):
    folder = make_checkpoint(tmp_path / "bare", tokenizer=False)
    assert load_checkpoint(str(folder)).tokenizer is None
    tiny_tokenizer().save_pretrained(str(tmp_path / "tok"))
    loaded = load_checkpoint(str(folder), tokenizer=str(tmp_path / "tok"))
    assert loaded.tokenizer.eos_token == "<|endoftext|>"
    assert load_checkpoint(str(folder), tokenizer=tiny_tokenizer()).tokenizer is tiny_tokenizer()


def test_s3_checkpoint_is_copied_once_into_the_cache(tmp_path, s3_store):
    folder = make_checkpoint(tmp_path / "build", arch="llama", sharded=True, trainer_step=7)
    torch.save({"state": {}}, folder / "optimizer.pt")
    uri = s3_store.put(folder, "run/checkpoint-7")
    cache = tmp_path / "cache"
    ref = inspect_checkpoint(uri, s3_store.storage_options)

    with load_checkpoint(ref, storage_options=s3_store.storage_options, cache_dir=cache) as first:
        assert first.model_type == "llama" and _same_logits(first, "llama")
        assert first.local_dir == str(cache / ref.fingerprint)
        assert not os.path.exists(os.path.join(first.local_dir, "optimizer.pt"))  # pickles never copied
        assert first.tokenizer is not None
        second = load_checkpoint(uri, storage_options=s3_store.storage_options, cache_dir=cache)
        assert second.local_dir == first.local_dir  # cache hit
        assert sorted(p.name for p in cache.iterdir() if not p.name.startswith(".")) == [ref.fingerprint]
        release(second, delete=True)  # `first` still holds a lease: the entry stays
        assert os.path.isdir(first.local_dir)
    assert first.lease is None
    again = load_checkpoint(uri, storage_options=s3_store.storage_options, cache_dir=cache)
    release(again, delete=True)  # nobody else holds it now: removed
    assert not os.path.exists(again.local_dir)


def test_tokenizer_fallback_from_s3(tmp_path, s3_store):
    folder = make_checkpoint(tmp_path / "bare", tokenizer=False)
    tiny_tokenizer().save_pretrained(str(tmp_path / "tok"))
    tok_uri = s3_store.put(tmp_path / "tok", "tokenizer")
    loaded = load_checkpoint(str(folder), tokenizer=tok_uri, storage_options=s3_store.storage_options,
                             cache_dir=tmp_path / "cache")
    assert loaded.tokenizer("x = 1")["input_ids"] == tiny_tokenizer()("x = 1")["input_ids"]


def test_memory_checkpoint_loads_through_the_cache(tmp_path):
    from tests.helpers.checkpoints import Store

    folder = make_checkpoint(tmp_path / "build", arch="gpt2")
    uri = Store("memory://llc-load-test").put(folder, "run/step3")
    with load_checkpoint(uri, cache_dir=tmp_path / "cache") as loaded:
        assert loaded.model_type == "gpt2" and loaded.local_dir.startswith(str(tmp_path / "cache"))
