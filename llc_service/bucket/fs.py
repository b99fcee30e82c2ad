"""Fresh fsspec filesystems for a path or URI, shared by sources, sinks and the watcher.

fsspec caches filesystem *instances* (keyed by their options) and s3fs/gcsfs cache directory *listings* inside
them. A poller that reuses either never sees a checkpoint written after its first look. ``open_fs`` therefore
always builds a new instance (``skip_instance_cache=True``); callers that keep the instance around call
``fs.invalidate_cache()`` before each listing.

S3 endpoint and credentials come from the standard AWS environment (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``, profiles): botocore, which s3fs
builds on, reads them itself (``AWS_ENDPOINT_URL`` since botocore 1.31). ``storage_options`` adds anything else
(``{"client_kwargs": {"endpoint_url": ...}}``, ``{"anon": true}``, ``{"token": ...}`` for gcsfs).
"""

from __future__ import annotations

import os
import posixpath
from typing import Any

LOCAL_PROTOCOLS = ("file", "local")


def split_uri(uri: str | os.PathLike) -> tuple[str, str]:
    """``(protocol, rest)``; a plain path has protocol ``"file"``."""
    from fsspec.core import split_protocol

    protocol, rest = split_protocol(os.fspath(uri))
    return (protocol or "file"), rest


def is_local(uri: str | os.PathLike) -> bool:
    return split_uri(uri)[0] in LOCAL_PROTOCOLS


def open_fs(uri: str | os.PathLike, storage_options: dict | None = None) -> tuple[Any, str]:
    """A new filesystem instance for ``uri`` and the path inside it (absolute for local paths).

    Raises ``ImportError`` naming the package to install when the protocol's backend is missing (gcsfs).
    """
    import fsspec

    protocol, _ = split_uri(uri)
    try:
        cls = fsspec.get_filesystem_class(protocol)
    except ImportError as e:
        hint = " (pip install 'llc-service[gcs]')" if protocol in ("gs", "gcs") else ""
        raise ImportError(f"cannot open {uri}: {e}{hint}") from e
    # a copy: some fsspec consumers mutate the dict they are given
    options = dict(storage_options or {})
    fs = cls(skip_instance_cache=True, **options)
    return fs, path_of(uri, cls)


def path_of(uri: str | os.PathLike, cls: type | None = None) -> str:
    """The path inside the filesystem for ``uri``: absolute for local paths, ``bucket/key`` on object stores."""
    protocol, _ = split_uri(uri)
    if protocol in LOCAL_PROTOCOLS:
        from fsspec.implementations.local import LocalFileSystem

        return os.path.abspath(os.path.expanduser(LocalFileSystem._strip_protocol(os.fspath(uri))))
    if cls is None:
        import fsspec

        cls = fsspec.get_filesystem_class(protocol)
    path = cls._strip_protocol(os.fspath(uri))
    return path.rstrip("/") or path


def to_uri(protocol: str, path: str) -> str:
    """The URI a user would write for ``path`` inside a filesystem of ``protocol`` (local: a plain path)."""
    if protocol in LOCAL_PROTOCOLS:
        return path
    return f"{protocol}://{path.lstrip('/')}"


def join(path: str, *parts: str) -> str:
    """Join inside a filesystem path (always ``/``, also for local paths on POSIX)."""
    return posixpath.join(path, *parts)
