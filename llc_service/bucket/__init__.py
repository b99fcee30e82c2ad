"""Find checkpoint folders under a path or fsspec URI and tell complete from pending.

``get_source(uri).list_checkpoints()`` -> sorted ``CheckpointRef``s; ``inspect_checkpoint(uri)`` for one folder;
``open_fs(uri)`` for a fresh filesystem (also used by sinks and the watcher). Heavy backends (s3fs, gcsfs) are
imported only when a URI needs them.
"""

from llc_service.bucket.ref import COMPLETE, PENDING, CheckpointRef
from llc_service.bucket.registry import (
    FsspecSource,
    Source,
    get_source,
    inspect_checkpoint,
    register_source,
    registered_protocols,
)
from llc_service.storage import is_local, open_fs, split_uri, to_uri

__all__ = [
    "COMPLETE",
    "PENDING",
    "CheckpointRef",
    "FsspecSource",
    "Source",
    "get_source",
    "inspect_checkpoint",
    "is_local",
    "open_fs",
    "register_source",
    "registered_protocols",
    "split_uri",
    "to_uri",
]
