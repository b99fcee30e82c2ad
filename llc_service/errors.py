"""The one failure taxonomy: what went wrong, and whether trying again can help.

Every failure the service records or reports is an instance of one of two bases:

- :class:`PermanentError` (``kind = "permanent"``): the input is wrong (a corrupt checkpoint, bad data, a config
  typo) or the outcome is final (every chain diverged). Retrying cannot help until something changes.
- :class:`TransientError` (``kind = "transient"``): storage hiccups, a lost worker, an incomplete upload. A retry
  may succeed; the watcher and Ray retry these, up to ``max_retries``.

:class:`UsageError` is the permanent error of a *request* (a bad argument, an unknown config key): the CLI exits
with code 2 for it and writes nothing. :func:`classify` gives the kind of any exception, builtin or ours, and is
the only place that decides it. The class name of a recorded failure goes into the summary column ``error_type``,
so nothing downstream has to recognise a failure by its message.
"""

from __future__ import annotations

PERMANENT, TRANSIENT = "permanent", "transient"

# names of third-party exception classes that mean "the network or the storage service had trouble"
# (botocore's are not builtin ConnectionError/TimeoutError)
_NETWORK_WORDS = ("Connect", "Timeout", "Throttl", "SlowDown", "Endpoint")
# S3/GCS error codes of a store that refuses us for good (until someone changes permissions or buckets)
_REFUSAL_CODES = ("AccessDenied", "NoSuchBucket", "AllAccessDisabled", "InvalidAccessKeyId",
                  "SignatureDoesNotMatch", "AccountProblem", "InvalidBucketName")


class LLCServiceError(Exception):
    """Base of the service's own errors; ``kind`` says whether a retry can help, ``advice`` what a person can do
    (appended to the recorded message by :func:`describe`)."""

    kind: str = PERMANENT
    advice: str = ""


class PermanentError(LLCServiceError):
    """Retrying cannot help until the input changes."""

    kind = PERMANENT


class TransientError(LLCServiceError):
    """May succeed on a retry. ``row``: the failed summary row that goes with it, if one was built (the Ray layer
    carries it back to the caller when every retry failed)."""

    kind = TRANSIENT

    def __init__(self, message: str = "", row: dict | None = None):
        super().__init__(message)
        self.row = row

    def __reduce__(self):  # keep ``row`` when Ray pickles the exception back to the driver
        return (type(self), (str(self), self.row))


class UsageError(PermanentError, ValueError):
    """A bad request (argument, config value, missing location): the CLI exits 2 and nothing is written.

    Also a ``ValueError``, as config validation always raised one."""


class CheckpointPending(TransientError):
    """The checkpoint is still being written (a partial upload, a missing shard): measure it once complete."""


class IncompleteCheckpoint(PermanentError):
    """A checkpoint stayed pending with unchanged files longer than the watcher's pending timeout.

    Final for now, but the watcher measures the checkpoint again if it completes later (see
    :mod:`llc_service.watcher.policy`)."""


class TransientFailure(TransientError):
    """Recorded by the watcher for a unit that left no row and may succeed on a retry (a lost worker...)."""

    advice = ("retried up to max_retries times; if it keeps failing, the worker's log (Ray dashboard or "
              "`ray logs`) says why (out of memory: fewer processes or a larger node)")


class PermanentFailure(PermanentError):
    """Recorded by the watcher for a unit that left no row and would fail the same way again."""


class StorageRefused(PermanentError):
    """A store refuses us for good (no permission, a deleted bucket, bad credentials): fix it, then restart."""


def describe(exc: BaseException, limit: int = 2000) -> str:
    """``"<type>: <message>"`` as recorded in a failed row, with the error's advice when the message lacks it."""
    text = str(exc) or type(exc).__name__
    advice = getattr(exc, "advice", "")
    if advice and advice not in text:
        text = f"{text} (what to do: {advice})"
    text = text if len(text) < limit else text[:limit] + " …"
    return f"{type(exc).__name__}: {text}"


def error_type(exc: BaseException) -> str:
    """The value of the ``error_type`` column for ``exc``: its class name."""
    return type(exc).__name__


def is_network_error(exc: BaseException) -> bool:
    """Network or storage-service trouble anywhere in ``exc``'s cause chain (explicit or implicit)."""
    for e in _chain(exc):
        name = type(e).__name__
        if isinstance(e, (ConnectionError, TimeoutError)) or any(w in name for w in _NETWORK_WORDS):
            return True
    return False


def _chain(exc: BaseException, depth: int = 8):
    seen: BaseException | None = exc
    for _ in range(depth):
        if seen is None:
            return
        yield seen
        seen = seen.__cause__ or seen.__context__


def storage_error_code(exc: BaseException) -> str | None:
    """The S3-style error code behind ``exc`` (s3fs keeps botocore's ClientError in the cause chain), if any."""
    for e in _chain(exc):
        response = getattr(e, "response", None)
        if isinstance(response, dict):
            err = response.get("Error", {})
            code = err.get("Code") or response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code:
                return str(code)
    return None


def is_refusal(exc: BaseException) -> bool:
    """The storage service refuses the request for good: no permission, no such bucket, bad credentials."""
    return any(isinstance(e, (PermissionError, StorageRefused)) for e in _chain(exc)) or \
        storage_error_code(exc) in _REFUSAL_CODES


def classify(exc: BaseException) -> str:
    """``"transient"`` or ``"permanent"`` for any exception; the one rule of the package.

    1. network/storage trouble anywhere in the cause chain (connection refused, timeouts, S3 throttling) is
       transient, whatever it was wrapped in; a store that refuses us (no permission, no bucket) is permanent;
    2. our own errors carry their ``kind``;
    3. builtins: bad values and missing files (``ValueError``, ``TypeError``, ``KeyError``,
       ``FileNotFoundError``) are permanent, other ``OSError`` transient;
    4. anything else is permanent (an unknown bug would fail the same way again).
    """
    if is_network_error(exc):
        return TRANSIENT
    if is_refusal(exc):
        return PERMANENT
    if isinstance(exc, LLCServiceError):
        return exc.kind
    if isinstance(exc, (ValueError, TypeError, KeyError, FileNotFoundError)):
        return PERMANENT
    if isinstance(exc, OSError):
        return TRANSIENT
    return PERMANENT
