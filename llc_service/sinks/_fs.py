"""A fresh fsspec filesystem for a results URI (private until ``llc_service.bucket.fs`` is shared).

Fresh every time: fsspec caches filesystem instances and s3fs caches listings, so a reused instance can miss a
result another worker just wrote. The caller's ``storage_options`` are copied (some fsspec paths mutate them).
"""

from __future__ import annotations

import copy


def results_fs(uri: str, storage_options: dict | None = None):
    """(filesystem, root path inside it) for ``uri``; local paths come back absolute."""
    from fsspec.core import url_to_fs

    fs, root = url_to_fs(str(uri), skip_instance_cache=True, **copy.deepcopy(storage_options or {}))
    fs.invalidate_cache()
    return fs, root.rstrip("/") or "/"


def is_local(fs) -> bool:
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(fs, LocalFileSystem)
