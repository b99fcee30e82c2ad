"""Sources of checkpoints, keyed by URI protocol: the extension point for new storage kinds.

A ``Source`` answers one question, fresh every time it is asked: which checkpoint folders are under this URI,
and is each complete? New kinds register with ``@register_source("proto", ...)``; ``get_source`` picks by the
URI's protocol (a plain path is ``file``). One fsspec-based implementation serves local disk, S3, GCS and
memory; a kind that fsspec cannot list (an HTTP index, a database of runs) subclasses ``Source`` instead.
"""

from __future__ import annotations

import logging
import os
import posixpath
from typing import Callable

from llc_service.bucket.inspect import describe_folder, is_checkpoint_like
from llc_service.bucket.ref import CheckpointRef
from llc_service.storage import open_fs, path_of, split_uri

log = logging.getLogger(__name__)

_REGISTRY: dict[str, type["Source"]] = {}


def register_source(*protocols: str) -> Callable[[type["Source"]], type["Source"]]:
    """Class decorator: serve URIs whose protocol is one of ``protocols`` with the decorated ``Source``."""
    if not protocols:
        raise ValueError("register_source needs at least one protocol")

    def decorate(cls: type[Source]) -> type[Source]:
        for protocol in protocols:
            _REGISTRY[protocol.lower()] = cls
        return cls

    return decorate


def registered_protocols() -> list[str]:
    return sorted(_REGISTRY)


class Source:
    """Checkpoint folders under one URI. Subclasses implement ``list_checkpoints`` and ``inspect``."""

    def __init__(self, uri: str | os.PathLike, storage_options: dict | None = None, marker_file: str | None = None):
        self.uri = os.fspath(uri)
        self.storage_options = dict(storage_options or {})
        self.marker_file = marker_file

    def list_checkpoints(self) -> list[CheckpointRef]:
        """Every checkpoint folder under the source (itself included), sorted by (run_id, step); never cached."""
        raise NotImplementedError

    def inspect(self, uri: str | os.PathLike | None = None) -> CheckpointRef:
        """The ``CheckpointRef`` of one folder (default: the source URI itself)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"


def sort_key(ref: CheckpointRef) -> tuple:
    """(run_id, step) with unnumbered folders last in their run, ties broken by URI."""
    return (ref.run_id, ref.step is None, ref.step if ref.step is not None else 0, ref.uri)


@register_source("file", "local", "s3", "s3a", "gs", "gcs", "memory")
class FsspecSource(Source):
    """Any fsspec filesystem: one recursive listing per call, grouped by folder.

    The filesystem instance is built fresh (no fsspec instance cache) and its listing cache is invalidated
    before every call, so a checkpoint that appears between two calls is seen by the second.
    """

    def __init__(self, uri, storage_options=None, marker_file=None):
        super().__init__(uri, storage_options, marker_file)
        self.protocol, _ = split_uri(self.uri)
        self.fs, self.path = open_fs(self.uri, self.storage_options)

    def _fresh(self) -> None:
        self.fs.invalidate_cache()

    def list_checkpoints(self) -> list[CheckpointRef]:
        self._fresh()
        try:
            found = self.fs.find(self.path, detail=True)
        except FileNotFoundError:
            found = {}
        folders: dict[str, dict[str, dict]] = {}
        for path, info in found.items():
            if info.get("type", "file") != "file":
                continue
            path = path.rstrip("/")
            folders.setdefault(posixpath.dirname(path), {})[posixpath.basename(path)] = info
        refs = [
            describe_folder(self.fs, self.protocol, folder, files, self.marker_file)
            for folder, files in folders.items()
            if is_checkpoint_like(set(files))
        ]
        return sorted(refs, key=sort_key)

    def inspect(self, uri=None) -> CheckpointRef:
        self._fresh()
        if uri is None:
            path = self.path
        else:
            if split_uri(uri)[0] != self.protocol:
                raise ValueError(f"{uri} is not a {self.protocol} URI like source {self.uri}")
            path = path_of(uri, type(self.fs))
        try:
            entries = self.fs.ls(path, detail=True)
        except FileNotFoundError:
            entries = []
        files = {posixpath.basename(e["name"].rstrip("/")): e for e in entries if e.get("type", "file") == "file"}
        if not files:
            raise FileNotFoundError(f"checkpoint folder {uri or self.uri} does not exist or is empty")
        return describe_folder(self.fs, self.protocol, path, files, self.marker_file)


def get_source(uri: str | os.PathLike, storage_options: dict | None = None, marker_file: str | None = None) -> Source:
    """The registered ``Source`` for ``uri``'s protocol (a plain path is ``file``)."""
    protocol, _ = split_uri(uri)
    cls = _REGISTRY.get(protocol.lower())
    if cls is None:
        raise ValueError(f"no checkpoint source for protocol {protocol!r} in {os.fspath(uri)!r}; "
                         f"known: {', '.join(registered_protocols())} (add one with @register_source)")
    return cls(uri, storage_options=storage_options, marker_file=marker_file)


def inspect_checkpoint(uri: str | os.PathLike, storage_options: dict | None = None,
                       marker_file: str | None = None) -> CheckpointRef:
    """The ``CheckpointRef`` of the single checkpoint folder at ``uri`` (fresh; raises if the folder is absent)."""
    return get_source(uri, storage_options, marker_file).inspect()
