"""The one fsspec helper of the package: fresh filesystems for a path or URI (sources, data, results, claims).

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

import copy
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
    """A new filesystem instance for ``uri`` (listing cache cleared) and the path inside it.

    The path is absolute for local paths and ``bucket/key`` without a trailing ``/`` on object stores. The
    caller's ``storage_options`` are copied (some fsspec consumers mutate the dict they are given). Raises
    ``ImportError`` naming the package to install when the protocol's backend is missing (gcsfs).
    """
    from fsspec.core import url_to_fs

    protocol, _ = split_uri(uri)
    try:
        fs, path = url_to_fs(os.fspath(uri), skip_instance_cache=True, **copy.deepcopy(storage_options or {}))
    except ImportError as e:
        hint = " (pip install 'llc-service[gcs]')" if protocol in ("gs", "gcs") else ""
        raise ImportError(f"cannot open {uri}: {e}{hint}") from e
    fs.invalidate_cache()
    if protocol in LOCAL_PROTOCOLS:
        return fs, os.path.abspath(os.path.expanduser(path))
    return fs, path.rstrip("/") or path


def fs_is_local(fs) -> bool:
    """Whether a filesystem instance is the local disk (atomic rename, flock)."""
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(fs, LocalFileSystem)


def path_of(uri: str | os.PathLike, cls: type | None = None) -> str:
    """The path inside the filesystem for ``uri``: absolute for local paths, ``bucket/key`` on object stores."""
    protocol, _ = split_uri(uri)
    if protocol in LOCAL_PROTOCOLS:
        from fsspec.implementations.local import LocalFileSystem

        return os.path.abspath(os.path.expanduser(LocalFileSystem._strip_protocol(os.fspath(uri))))  # noqa: SLF001
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


def check_location(what: str, uri: str, storage_options: dict, must_exist: bool, may_appear: bool) -> str | None:
    """An error message if ``uri`` clearly does not exist (local path, or the bucket of an object store).

    ``may_appear``: on an object store a prefix exists only once something is written under it, so a prefix that
    is not there yet (training has not saved its first checkpoint) is a warning, not an error.
    """
    import logging

    log = logging.getLogger(__name__)
    protocol, _ = split_uri(uri)
    try:
        fs, path = open_fs(uri, storage_options)
        if protocol in LOCAL_PROTOCOLS:
            return f"{what} {uri} does not exist" if must_exist and not os.path.exists(path) else None
        if protocol in ("s3", "s3a", "gs", "gcs"):
            bucket = path.split("/", 1)[0]
            if not fs.exists(bucket):
                return f"{what} {uri}: bucket {bucket!r} does not exist (or is not visible with these credentials)"
        if must_exist and not fs.exists(path):
            if not may_appear:
                return f"{what} {uri} does not exist"
            log.warning("%s %s has nothing in it yet; waiting for checkpoints to appear", what, uri)
    except ImportError as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - unreachable endpoint, bad credentials...
        return f"cannot reach {what} {uri}: {type(exc).__name__}: {exc}"
    return None
