"""Build tiny real checkpoints in every layout the service meets, and an S3 server to put them on.

Reusable by any test folder::

    from tests.helpers.checkpoints import make_checkpoint, moto_s3, upload

    with moto_s3(buckets=("ckpts",)) as (endpoint_url, storage_options):
        local = make_checkpoint(tmp_path / "run1" / "step100", arch="llama", sharded=True)
        upload(local, "s3://ckpts/run1/step100", storage_options)

Models are freshly initialised (loading tests need no training) and small (hidden 32, 2 layers: ~55k
parameters, a few hundred KB), so building one costs milliseconds.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import socket
from pathlib import Path

DUMMY_CREDENTIALS = {"key": "testing", "secret": "testing"}


@functools.lru_cache(maxsize=None)
def tiny_tokenizer(vocab_size: int = 512):
    """A byte-level BPE tokenizer trained on 200 KB of stdlib source (~0.5 s, once per session)."""
    from llc_service.demo import assets

    return assets.train_tokenizer(vocab_size=vocab_size, max_bytes=200_000)


@functools.lru_cache(maxsize=None)
def _model(arch: str, seed: int, hidden: int, layers: int, heads: int, vocab_size: int):
    from llc_service.demo import assets

    return assets.tiny_model(arch, seed=seed, vocab_size=vocab_size, hidden=hidden, layers=layers, heads=heads)


def tiny_model(arch: str = "gpt_neox", seed: int = 0, hidden: int = 32, layers: int = 2, heads: int = 2,
               vocab_size: int = 512):
    """A freshly initialised tiny causal LM (cached per arguments: do not modify it in place)."""
    return _model(arch, seed, hidden, layers, heads, vocab_size)


def make_checkpoint(directory: str | os.PathLike, arch: str = "gpt_neox", sharded: bool = False,
                    trainer_step: int | None = None, tokenizer: bool = True, seed: int = 0,
                    max_shard_size: str = "100KB") -> Path:
    """``save_pretrained`` a tiny model of ``arch`` into ``directory`` (safetensors).

    ``sharded`` splits it into ~3 shards plus ``model.safetensors.index.json``; ``trainer_step`` adds an HF-Trainer
    ``trainer_state.json`` with that ``global_step``; ``tokenizer`` saves the tiny BPE tokenizer next to it.
    """
    from llc_service.demo import assets

    return assets.save_checkpoint(
        tiny_model(arch, seed=seed), directory, tokenizer=tiny_tokenizer() if tokenizer else None,
        max_shard_size=max_shard_size if sharded else None, trainer_state_step=trainer_step)


def make_pickle_checkpoint(directory: str | os.PathLike, arch: str = "gpt_neox") -> Path:
    """A legacy checkpoint: ``config.json`` plus pickled ``pytorch_model.bin`` (what the loader must refuse)."""
    import torch

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    model = tiny_model(arch)
    model.config.save_pretrained(str(out))
    torch.save(model.state_dict(), out / "pytorch_model.bin")
    return out


def write_nan_weights(directory: str | os.PathLike, index: int = 0) -> None:
    """Overwrite the single ``model.safetensors`` of ``directory`` with a NaN in one tensor (still valid format), at
    flat position ``index`` (-1: the last element, which a model sharded by rows holds on its last process)."""
    from safetensors.torch import load_file, save_file

    path = Path(directory) / "model.safetensors"
    tensors = load_file(str(path))
    name = sorted(tensors)[0]
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[index] = float("nan")
    save_file(tensors, str(path), metadata={"format": "pt"})


def set_config(directory: str | os.PathLike, **updates) -> None:
    """Edit keys of ``config.json`` in place (e.g. ``auto_map=...``, ``model_type="nope"``)."""
    path = Path(directory) / "config.json"
    config = json.loads(path.read_text())
    config.update(updates)
    path.write_text(json.dumps(config))


def shard_files(directory: str | os.PathLike) -> list[Path]:
    return sorted(Path(directory).glob("model-*-of-*.safetensors"))


def upload(local_dir: str | os.PathLike, uri: str, storage_options: dict | None = None) -> str:
    """Copy a local folder to ``uri`` (``s3://bucket/prefix``) with fsspec ``put``; returns ``uri``."""
    from llc_service.bucket import open_fs

    fs, path = open_fs(uri, storage_options)
    for file in sorted(Path(local_dir).iterdir()):
        if file.is_file():
            fs.put_file(str(file), f"{path}/{file.name}")
    return uri


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def moto_s3(buckets: tuple[str, ...] = ()):
    """A moto S3 server on 127.0.0.1 and a free port; yields ``(endpoint_url, storage_options)``.

    ``storage_options`` carries the endpoint and dummy credentials for s3fs. The region comes from
    ``AWS_DEFAULT_REGION`` (tests/conftest.py sets us-east-1): a ``region_name`` in ``client_kwargs`` breaks
    bucket creation on moto. The server is stopped on exit. moto's storage lives in the process, not the server:
    objects written through an earlier server in the same test session are still there, so use unique prefixes.
    """
    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint_url = f"http://127.0.0.1:{port}"
    storage_options = {**DUMMY_CREDENTIALS, "client_kwargs": {"endpoint_url": endpoint_url}}
    try:
        if buckets:
            from llc_service.bucket import open_fs

            fs, _ = open_fs("s3://", storage_options)
            for bucket in buckets:
                # moto keeps its state per process, not per server: a bucket from an earlier server may exist
                if not fs.exists(bucket):
                    fs.mkdir(bucket)
        yield endpoint_url, storage_options
    finally:
        server.stop()


class Store:
    """A folder on some backend (local path, ``memory://``, ``s3://``) that tests put checkpoints into."""

    def __init__(self, root: str, storage_options: dict | None = None):
        self.root = root.rstrip("/")
        self.storage_options = dict(storage_options or {})

    def uri(self, rel: str = "") -> str:
        return f"{self.root}/{rel}".rstrip("/") if rel else self.root

    def _fs(self):
        from llc_service.bucket import open_fs

        return open_fs(self.root, self.storage_options)

    @staticmethod
    def _mkparent(fs, path: str) -> str:
        if fs.protocol in ("file", "local") or "file" in fs.protocol:  # object stores have no folders
            fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        return path

    def put(self, local_dir: str | os.PathLike, rel: str, skip: tuple[str, ...] = ()) -> str:
        """Copy the files of ``local_dir`` to ``rel`` under the root (except names in ``skip``)."""
        fs, path = self._fs()
        for file in sorted(Path(local_dir).iterdir()):
            if file.is_file() and file.name not in skip:
                fs.put_file(str(file), self._mkparent(fs, f"{path}/{rel}/{file.name}"))
        return self.uri(rel)

    def put_file(self, local_file: str | os.PathLike, rel: str) -> None:
        fs, path = self._fs()
        fs.put_file(str(local_file), self._mkparent(fs, f"{path}/{rel}"))

    def write(self, rel: str, data: bytes) -> None:
        fs, path = self._fs()
        fs.pipe_file(self._mkparent(fs, f"{path}/{rel}"), data)

    def remove(self, rel: str) -> None:
        fs, path = self._fs()
        fs.rm_file(f"{path}/{rel}")
