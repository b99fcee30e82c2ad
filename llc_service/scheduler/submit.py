"""``llc-service submit JOB.yaml``: send a job file to a Ray cluster's job API, at most once, and follow it.

Why a content-derived submission id: Ray keeps one job per submission id, so re-running the same command (a
retry after a dropped connection, a second person, a cron) attaches to the job that is already there instead
of measuring everything twice. The job file format lives in :mod:`llc_service.scheduler.job_spec`.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import TextIO

from llc_service.scheduler.job_spec import JobSpec, load_job

log = logging.getLogger(__name__)

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def _status(client, submission_id: str) -> str:
    status = client.get_job_status(submission_id)
    return str(getattr(status, "value", status))


def existing_status(client, submission_id: str) -> str | None:
    """Status of the job with this id, or None if the cluster has no such job."""
    try:
        return _status(client, submission_id)
    except RuntimeError as exc:  # the SDK raises RuntimeError("Request failed with status code 404: ...")
        if "404" in str(exc) or "does not exist" in str(exc).lower():
            return None
        raise


def _print(out: TextIO, text: str) -> None:
    out.write(text)
    out.flush()


async def _tail(client, submission_id: str, out: TextIO) -> None:
    async for chunk in client.tail_job_logs(submission_id):
        _print(out, chunk)


def _poll_logs(client, submission_id: str, out: TextIO, deadline: float | None, interval: float = 2.0) -> None:
    """Fallback when the log websocket is not available: print the new part of the logs every few seconds."""
    shown = 0
    while True:
        logs = client.get_job_logs(submission_id)
        _print(out, logs[shown:])
        shown = len(logs)
        if _status(client, submission_id) in TERMINAL:
            _print(out, client.get_job_logs(submission_id)[shown:])
            return
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"job {submission_id} still running after the timeout")
        time.sleep(interval)


def follow_job(client, submission_id: str, timeout: float | None = None, out: TextIO | None = None) -> str:
    """Stream the job's logs to ``out`` until it ends; returns its final status."""
    out = out or sys.stdout
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        asyncio.run(asyncio.wait_for(_tail(client, submission_id, out), timeout))
    except (asyncio.TimeoutError, TimeoutError):
        raise TimeoutError(f"job {submission_id} still running after {timeout}s") from None
    except Exception as exc:  # noqa: BLE001 - no websocket (proxy, running event loop): poll instead
        log.info("log stream unavailable (%s); polling the logs", exc)
        _poll_logs(client, submission_id, out, deadline)
    # the stream closes when the driver exits; the status may lag by a moment
    while (status := _status(client, submission_id)) not in TERMINAL:
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"job {submission_id} still running after {timeout}s")
        time.sleep(0.5)
    return status


def submit_spec(client, spec: JobSpec) -> bool:
    """Submit unless a job with this id exists; True if this call submitted it."""
    if existing_status(client, spec.submission_id) is not None:
        return False
    try:
        client.submit_job(submission_id=spec.submission_id, **spec.fields)
    except RuntimeError as exc:
        if "already exists" in str(exc):  # someone submitted the same job a moment ago
            return False
        raise
    return True


def submit_job(job_yaml_path: str, address: str, sets: list[str] | None = None, follow: bool = True, *,
               timeout: float | None = None, out: TextIO | None = None) -> int:
    """Submit ``job_yaml_path`` (with ``--set`` overrides) to the Ray dashboard at ``address``; exit code.

    If a job with the same content was submitted before, attach to it instead. With ``follow`` stream its logs
    until it ends and return 0 if it SUCCEEDED, else 1; without, return 0 once it is submitted (1 if the existing
    job already FAILED or was STOPPED). ``timeout`` bounds the following (seconds); the job keeps running after.
    Config errors in the job file raise ``ValueError``, and so do credentials in the job (``CredentialsError``)
    and a cluster that requires a Ray token when none is configured (see :mod:`llc_service.scheduler.ray_auth`).
    """
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    from llc_service.credentials import refuse_secrets_in_job
    from llc_service.scheduler.ray_auth import auth_headers, check_client_auth, client_token, explain_auth_error

    spec = load_job(job_yaml_path, sets)
    refuse_secrets_in_job(spec.fields, job_yaml_path)  # the dashboard shows entrypoint and runtime_env to all
    token = client_token()
    check_client_auth(address, token)
    err = sys.stderr
    try:
        client = JobSubmissionClient(address, headers=auth_headers(token))
        submitted = submit_spec(client, spec)
    except (ConnectionError, RuntimeError, AuthenticationError) as exc:
        why = explain_auth_error(exc, address, token)
        print(f"llc-service submit: {why or f'cannot submit to {address}: {exc}'}", file=err)
        return 2 if why else 1
    sid = spec.submission_id
    if submitted:
        print(f"submitted {sid} to {address}", file=err)
    else:
        print(f"{sid} was already submitted (status {_status(client, sid)}): attaching to it, not running it "
              f"again (change the job or --set metadata.rerun=N to run it anew)", file=err)
    if not follow:
        print(f"follow it with: ray job logs --follow --address {address} {sid}", file=err)
        return 1 if _status(client, sid) in ("FAILED", "STOPPED") else 0
    try:
        status = follow_job(client, sid, timeout, out)
    except KeyboardInterrupt:
        print(f"\nstopped following; the job keeps running. Stop it with: ray job stop --address {address} {sid}",
              file=err)
        return 130
    except TimeoutError as exc:
        print(f"llc-service submit: {exc}; it keeps running", file=err)
        return 1
    info = client.get_job_info(sid)
    print(f"{sid}: {status}" + (f" ({info.message})" if status != "SUCCEEDED" and info.message else ""), file=err)
    return 0 if status == "SUCCEEDED" else 1
