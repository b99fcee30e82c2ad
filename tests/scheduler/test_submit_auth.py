"""``llc-service submit`` against a real head that requires a Ray token (``RAY_AUTH_MODE=token``) on loopback.

The head gets its token from a mode-600 ``RAY_AUTH_TOKEN_PATH`` file, as the Slurm script gives it. With the same
token the CLI submits and the job runs; without one it exits 2 naming where to put the token, before anything
runs; with another token the cluster refuses it. The job API itself answers 401 to a bare request.
"""

from __future__ import annotations

import io
import os
import secrets
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request

import pytest

from tests.helpers.watch import cli_path
from tests.scheduler.ray_head import HeadUnavailable, ray_head

# ~65 s on 2 busy cores (a head start, two CLI runs, one job): slow. The pieces without a head are in test_ray_auth.py
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:ssl=None is deprecated:DeprecationWarning")]

TOKEN = secrets.token_hex(32)


@pytest.fixture(scope="module")
def token_head():
    try:
        with ray_head(num_cpus=1, start_timeout=90, token=TOKEN) as h:
            yield h
    except HeadUnavailable as exc:
        pytest.skip(f"could not start a Ray head with token auth: {exc}")


def _job(tmp_path) -> str:
    script = tmp_path / "append.py"
    script.write_text("import sys\nopen(sys.argv[1], 'a').write('ran\\n')\nprint('hello from the job')\n")
    job = tmp_path / "job.yaml"
    job.write_text(textwrap.dedent(f"""\
        name: auth-test
        entrypoint: "{sys.executable} {script} {tmp_path / 'marker.txt'}"
        entrypoint_num_cpus: 0
    """))
    return str(job)


def _env(tmp_path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH") and k != "RAY_ADDRESS"}
    env.update(RAY_USAGE_STATS_ENABLED="0", HOME=str(tmp_path / "home"), **extra)  # no ~/.ray/auth_token
    return env


def _submit(job: str, address: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([cli_path(), "submit", job, "--address", address], env=env, capture_output=True,
                          text=True, timeout=120)


def test_the_job_api_refuses_requests_without_the_token(token_head):
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(f"{token_head.dashboard_url}/api/jobs/", timeout=10)
    assert exc.value.code == 401
    request = urllib.request.Request(f"{token_head.dashboard_url}/api/jobs/",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as r:
        assert r.status == 200


def test_submit_without_a_token_is_a_clear_error_and_runs_nothing(token_head, tmp_path):
    result = _submit(_job(tmp_path), token_head.dashboard_url, _env(tmp_path))
    assert result.returncode == 2, result.stderr[-3000:]
    err = result.stderr
    assert "requires a token" in err and "RAY_AUTH_TOKEN_PATH" in err and "Traceback" not in err, err
    assert not (tmp_path / "marker.txt").exists()


def test_submit_with_the_token_file_runs_the_job(token_head, tmp_path):
    token_file = tmp_path / "ray-token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    result = _submit(_job(tmp_path), token_head.dashboard_url, _env(tmp_path, RAY_AUTH_TOKEN_PATH=str(token_file)))
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "marker.txt").read_text() == "ran\n"
    assert "hello from the job" in result.stdout
    assert TOKEN not in result.stdout + result.stderr  # the token itself is never printed

    # a token file others can read is refused before it is used
    token_file.chmod(0o644)
    again = _submit(_job(tmp_path), token_head.dashboard_url, _env(tmp_path, RAY_AUTH_TOKEN_PATH=str(token_file)))
    assert again.returncode == 2 and "chmod 600" in again.stderr and TOKEN not in again.stderr


def test_a_wrong_token_is_rejected_by_the_cluster(token_head, tmp_path, monkeypatch, capsys):
    from llc_service.scheduler.submit import submit_job

    monkeypatch.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
    assert submit_job(_job(tmp_path), token_head.dashboard_url, out=io.StringIO(), timeout=60) == 2
    err = capsys.readouterr().err
    assert "rejected the token" in err and "RAY_AUTH_TOKEN" in err, err
    assert not (tmp_path / "marker.txt").exists()
