"""Real job submission to a real ``ray start --head`` (dashboard + job API) on loopback.

Independent of the measurement code: the job's entrypoint is a tiny script that appends a line to a file.
"""

from __future__ import annotations

import io
import os
import sys
import textwrap

import pytest

from llc_service.scheduler.job_spec import load_job
from llc_service.scheduler.submit import submit_job
from tests.scheduler.ray_head import HeadUnavailable, ray_head

# Ray's own SDK opens the log websocket with ssl=None, which aiohttp deprecates: not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:ssl=None is deprecated:DeprecationWarning")


@pytest.fixture(scope="module")
def head():
    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"  # the client side: send no token to a no-auth test head
    try:
        with ray_head(num_cpus=2, start_timeout=90) as h:
            yield h
    except HeadUnavailable as exc:
        pytest.skip(f"could not start a Ray head for job submission: {exc}")
    finally:
        if saved is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved


def _job(tmp_path) -> str:
    script = tmp_path / "append.py"
    script.write_text(textwrap.dedent("""\
        import sys
        with open(sys.argv[1], "a") as f:
            f.write("ran\\n")
        print("hello from the job", flush=True)
    """))
    job = tmp_path / "job.yaml"
    job.write_text(textwrap.dedent(f"""\
        name: append-test
        params:
          python: {sys.executable}
          script: {script}
          marker: {tmp_path / "marker.txt"}
        entrypoint: "{{{{python}}}} {{{{script}}}} {{{{marker}}}}"
        entrypoint_num_cpus: 1
        runtime_env:
          env_vars: {{OMP_NUM_THREADS: "1"}}
        metadata: {{purpose: test}}
    """))
    return str(job)


def test_submit_runs_once_and_follows_logs(head, tmp_path):
    job = _job(tmp_path)
    out = io.StringIO()
    assert submit_job(job, head.dashboard_url, follow=True, timeout=120, out=out) == 0
    assert (tmp_path / "marker.txt").read_text() == "ran\n"
    assert "hello from the job" in out.getvalue()

    # same job again: same submission id, attaches, does not run it again
    again = io.StringIO()
    assert submit_job(job, head.dashboard_url, follow=True, timeout=60, out=again) == 0
    assert (tmp_path / "marker.txt").read_text() == "ran\n"

    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(head.dashboard_url)
    sid = load_job(job).submission_id
    ours = [j for j in client.list_jobs() if j.submission_id == sid]
    assert len(ours) == 1 and ours[0].metadata.get("purpose") == "test"


def test_set_override_makes_a_new_job_and_failure_is_exit_1(head, tmp_path):
    job = _job(tmp_path)
    other = tmp_path / "other.txt"
    assert load_job(job).submission_id != load_job(job, [f"params.marker={other}"]).submission_id
    assert submit_job(job, head.dashboard_url, sets=[f"params.marker={other}"], timeout=120, out=io.StringIO()) == 0
    assert other.read_text() == "ran\n" and not (tmp_path / "marker.txt").exists()
    # an entrypoint that fails: exit code 1
    failing = [f"params.marker={tmp_path / 'no-such-dir' / 'x.txt'}"]
    assert submit_job(job, head.dashboard_url, sets=failing, timeout=120, out=io.StringIO()) == 1


def test_submit_measure_one_job_lands_its_result(head, tmp_path, token_parquet):
    """The shipped jobs/measure_one.yaml, submitted as users do, measures a real checkpoint into Parquet."""
    from pathlib import Path

    from llc_service import read_summary
    from tests.helpers.checkpoints import make_checkpoint

    repo = Path(__file__).resolve().parents[2]
    ckpt = make_checkpoint(tmp_path / "bucket" / "run-job" / "checkpoint-30", trainer_step=30)
    out = tmp_path / "results"
    small = ("--no-wandb -q --set num_chains=2 --set num_draws=10 --set num_burnin=0 --set batch_size=8 "
             "--set init_loss_batches=4")
    sets = [f"params.checkpoint={ckpt}", f"params.data={token_parquet}", f"params.out={out}",
            f"params.extra={small}", "entrypoint_num_gpus=0", "entrypoint_num_cpus=1"]
    log = io.StringIO()
    assert submit_job(str(repo / "jobs" / "measure_one.yaml"), head.dashboard_url, sets=sets, timeout=300,
                      out=log) == 0, log.getvalue()[-3000:]
    assert "run-job step 30:  λ̂ = " in log.getvalue()
    s = read_summary(str(out))
    assert list(s.status) == ["ok"] and int(s.checkpoint_step.iloc[0]) == 30
