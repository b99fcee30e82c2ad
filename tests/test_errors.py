"""One failure taxonomy: every exception the service meets has one kind, decided in one place."""

from __future__ import annotations

import pytest

from llc_service.checkpoint import CheckpointError
from llc_service.data import DataError
from llc_service.errors import (
    CheckpointPending,
    IncompleteCheckpoint,
    PermanentError,
    TransientError,
    UsageError,
    classify,
)
from llc_service.estimate import AllChainsDivergedError


class EndpointConnectionError(Exception):
    """botocore's, by name: not a builtin ConnectionError."""


@pytest.mark.parametrize("exc, kind", [
    (CheckpointError("s3://b/step1", "pickle-only checkpoint"), "permanent"),
    (DataError("no input_ids column"), "permanent"),
    (AllChainsDivergedError("all 4 chains diverged"), "permanent"),
    (UsageError("bad --interval"), "permanent"),
    (IncompleteCheckpoint("stuck"), "permanent"),
    (CheckpointPending("still uploading"), "transient"),
    (TransientError("lost worker"), "transient"),
    (ConnectionRefusedError(), "transient"),
    (TimeoutError(), "transient"),
    (EndpointConnectionError("Could not connect"), "transient"),
    (OSError("file changed while copying"), "transient"),
    (FileNotFoundError("model.safetensors"), "permanent"),
    (ValueError("bad config"), "permanent"),
    (KeyError("x"), "permanent"),
    (RuntimeError("a bug"), "permanent"),
])
def test_classify(exc, kind):
    assert classify(exc) == kind


def test_network_trouble_anywhere_in_the_cause_chain_is_transient():
    try:
        try:
            raise EndpointConnectionError("Could not connect to the endpoint URL")
        except EndpointConnectionError as inner:
            raise DataError("cannot read s3://data/val.parquet") from inner
    except DataError as outer:
        assert classify(outer) == "transient"  # the data is not bad: the store was unreachable


def test_taxonomy_keeps_the_builtin_bases_callers_relied_on():
    assert isinstance(DataError("x"), ValueError) and isinstance(UsageError("x"), ValueError)
    assert isinstance(AllChainsDivergedError("x"), RuntimeError)
    assert all(issubclass(c, PermanentError) for c in (CheckpointError, DataError, AllChainsDivergedError))


def test_transient_error_keeps_its_row_through_pickling():
    import pickle

    err = pickle.loads(pickle.dumps(TransientError("SlowDown", row={"status": "failed"})))
    assert str(err) == "SlowDown" and err.row == {"status": "failed"}


def test_recorded_messages_say_what_to_do():
    from llc_service.errors import TransientFailure, describe

    text = describe(CheckpointError("s3://b/run/step1", "only pickle weights (pytorch_model.bin)"))
    assert text.startswith("CheckpointError: checkpoint s3://b/run/step1: only pickle weights")
    assert "what to do: fix the files and save again" in text
    assert "what to do: fix DATA" in describe(DataError("data file x.parquet holds no rows"))
    assert "what to do" in describe(TransientFailure("WorkerCrashedError (gave up after 3 attempts)"))
    assert describe(ValueError("plain")) == "ValueError: plain"  # builtins carry no advice
