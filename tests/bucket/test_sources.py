"""Listing, completeness, step parsing and fingerprints on local disk, memory and a moto S3 server."""

import pytest

from llc_service.bucket import (
    CheckpointRef,
    FsspecSource,
    Source,
    get_source,
    inspect_checkpoint,
    open_fs,
    register_source,
)
from llc_service.bucket.registry import _REGISTRY
from tests.helpers.checkpoints import make_checkpoint, make_pickle_checkpoint, shard_files


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Tiny checkpoints in each layout, built once locally and copied to each backend by the tests."""
    root = tmp_path_factory.mktemp("built")
    return {
        "plain": make_checkpoint(root / "plain"),
        "sharded": make_checkpoint(root / "sharded", sharded=True),
        "trainer": make_checkpoint(root / "trainer", trainer_step=30),
        "gpt2": make_checkpoint(root / "gpt2", arch="gpt2", tokenizer=False),
        "llama": make_checkpoint(root / "llama", arch="llama", sharded=True, tokenizer=False),
        "other": make_checkpoint(root / "other", seed=1, tokenizer=False),
        "pickle": make_pickle_checkpoint(root / "pickle"),
    }


def test_lists_every_layout_sorted_by_run_and_step(store, built):
    store.put(built["plain"], "pythia/step1000")
    store.put(built["sharded"], "pythia/step20")
    store.put(built["gpt2"], "pythia/step3")
    store.put(built["trainer"], "hf/checkpoint-30")
    store.put(built["trainer"], "hf/final")  # no number in the name: step from trainer_state.json
    store.put(built["llama"], "hf/unnumbered")
    store.put(built["pickle"], "legacy/step5")
    store.write("tokenizer-only/tokenizer.json", b"{}")  # not a checkpoint
    store.write("notes.txt", b"hello")

    refs = get_source(store.root, store.storage_options).list_checkpoints()

    got = [(r.run_id, r.step, r.uri.rsplit("/", 1)[-1], r.status) for r in refs]
    assert got == [
        ("hf", 30, "checkpoint-30", "complete"),
        ("hf", 30, "final", "complete"),
        ("hf", None, "unnumbered", "complete"),
        ("legacy", 5, "step5", "complete"),  # pickle-only: complete-looking, the loader refuses it
        ("pythia", 3, "step3", "complete"),
        ("pythia", 20, "step20", "complete"),
        ("pythia", 1000, "step1000", "complete"),
    ]
    assert refs[0].uri == store.uri("hf/checkpoint-30")
    assert all(isinstance(r, CheckpointRef) and len(r.fingerprint) == 16 and r.reason is None for r in refs)


def test_source_folder_that_is_itself_a_checkpoint_is_listed(store, built):
    uri = store.put(built["plain"], "run7/step9")
    refs = get_source(uri, store.storage_options).list_checkpoints()
    assert [(r.uri, r.run_id, r.step) for r in refs] == [(uri, "run7", 9)]
    assert inspect_checkpoint(uri, store.storage_options) == refs[0]


def test_listing_is_never_stale(store, built):
    source = get_source(store.root, store.storage_options)
    store.put(built["plain"], "run/step1")
    assert [r.step for r in source.list_checkpoints()] == [1]
    store.put(built["plain"], "run/step2")
    assert [r.step for r in source.list_checkpoints()] == [1, 2]  # same Source object sees the new one
    assert inspect_checkpoint(store.uri("run/step2"), store.storage_options).step == 2


def test_missing_shard_is_pending_until_it_appears(store, built):
    shards = shard_files(built["sharded"])
    assert len(shards) >= 2
    store.put(built["sharded"], "run/step5", skip=(shards[-1].name,))
    source = get_source(store.root, store.storage_options)
    (ref,) = source.list_checkpoints()
    assert ref.status == "pending" and shards[-1].name in ref.reason
    store.put_file(shards[-1], f"run/step5/{shards[-1].name}")
    (ref,) = source.list_checkpoints()
    assert ref.status == "complete" and ref.reason is None


def test_marker_file_gates_completeness(store, built):
    uri = store.put(built["plain"], "run/step5")
    source = get_source(uri, store.storage_options, marker_file="DONE")
    ref = source.inspect()
    assert ref.status == "pending" and "DONE" in ref.reason
    store.write("run/step5/DONE", b"")
    assert source.inspect().status == "complete"  # same Source: its listing cache must not hide DONE
    assert source.list_checkpoints()[0].status == "complete"


def test_missing_config_or_weights_is_pending(store, built):
    store.put(built["plain"], "run/step1", skip=("config.json",))
    store.put(built["plain"], "run/step2", skip=("model.safetensors",))
    refs = get_source(store.root, store.storage_options).list_checkpoints()
    assert [(r.step, r.status) for r in refs] == [(1, "pending"), (2, "pending")]
    assert "config.json" in refs[0].reason and "model.safetensors" in refs[1].reason


def test_weights_still_being_written_are_pending(store, built):
    """A trainer writing model.safetensors in place: fewer bytes than its header promises -> pending. On an object
    store an object appears whole or not at all, so a short one is truncated for good: complete, and refused by the
    loader with the reason (see test_truncated_weights_with_marker_are_complete_and_refused)."""
    data = (built["plain"] / "model.safetensors").read_bytes()
    store.put(built["plain"], "run/step1", skip=("model.safetensors",))
    store.write("run/step1/model.safetensors", data[: len(data) // 2])
    ref = inspect_checkpoint(store.uri("run/step1"), store.storage_options)
    if store.root.startswith("s3://"):
        assert ref.status == "complete"
    else:
        assert ref.status == "pending" and "model.safetensors incomplete" in ref.reason
    store.write("run/step1/model.safetensors", data)
    assert inspect_checkpoint(store.uri("run/step1"), store.storage_options).status == "complete"


def test_truncated_weights_with_marker_are_complete_and_refused(store, built, tmp_path):
    """Once the producer's marker exists, a short file or a missing shard is damage: complete, then refused."""
    from llc_service.checkpoint import CheckpointError, load_checkpoint

    data = (built["plain"] / "model.safetensors").read_bytes()
    store.put(built["plain"], "run/step1", skip=("model.safetensors",))
    store.write("run/step1/model.safetensors", data[: len(data) // 2])
    store.write("run/step1/DONE", b"")
    ref = inspect_checkpoint(store.uri("run/step1"), store.storage_options, marker_file="DONE")
    assert ref.status == "complete"
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(ref, storage_options=store.storage_options, cache_dir=tmp_path / "cache")


def test_fingerprint_is_stable_and_changes_when_weights_are_rewritten(store, built):
    uri = store.put(built["plain"], "run/step1")
    first = inspect_checkpoint(uri, store.storage_options).fingerprint
    assert inspect_checkpoint(uri, store.storage_options).fingerprint == first
    store.put_file(built["other"] / "model.safetensors", "run/step1/model.safetensors")  # same size, new bytes
    assert inspect_checkpoint(uri, store.storage_options).fingerprint != first


def test_inspect_missing_folder_raises(store):
    with pytest.raises(FileNotFoundError):
        inspect_checkpoint(store.uri("nope/step1"), store.storage_options)


def test_list_of_missing_root_is_empty(store):
    assert get_source(store.uri("not-yet"), store.storage_options).list_checkpoints() == []


def test_s3_endpoint_from_standard_aws_environment(s3_server, built, monkeypatch):
    endpoint_url, storage_options = s3_server
    from tests.helpers.checkpoints import Store

    Store("s3://ckpts/env-test", storage_options).put(built["plain"], "run/step4")
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    for proto in ("s3", "s3a"):
        (ref,) = get_source(f"{proto}://ckpts/env-test").list_checkpoints()
        assert ref.uri == f"{proto}://ckpts/env-test/run/step4" and ref.status == "complete"


def test_open_fs_gives_fresh_instances_and_absolute_local_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fs1, path = open_fs("ckpts/run")
    fs2, _ = open_fs("ckpts/run")
    assert fs1 is not fs2 and path == str(tmp_path / "ckpts" / "run")
    assert open_fs(f"file://{tmp_path}/x")[1] == f"{tmp_path}/x"
    assert open_fs("memory://bkt/a/")[1].endswith("bkt/a")


def test_registry_picks_by_protocol_and_is_extensible():
    for uri in ("/abs/path", "rel/path", "file:///abs", "memory://x", "s3://b/x", "s3a://b/x"):
        assert isinstance(get_source(uri), FsspecSource)
    with pytest.raises(ValueError, match="no checkpoint source for protocol 'ftpx'"):
        get_source("ftpx://host/path")

    @register_source("dummy")
    class DummySource(Source):
        def list_checkpoints(self):
            return [CheckpointRef(self.uri, "r", 1, "f" * 16, "complete", None)]

    try:
        assert get_source("dummy://anything").list_checkpoints()[0].run_id == "r"
    finally:
        _REGISTRY.pop("dummy")


def test_gcs_without_gcsfs_says_what_to_install():
    pytest.importorskip("fsspec")
    try:
        import gcsfs  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"llc-service\[gcs\]"):
            get_source("gs://bucket/runs")
    else:
        assert isinstance(get_source("gs://bucket/runs", {"token": "anon"}), FsspecSource)
