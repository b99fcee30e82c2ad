"""No shipped deployment exposes Ray's job API without authentication (issue 14, item 2).

Ray's job API runs any command as the cluster's user, with its bucket and wandb credentials (the class of attack
behind CVE-2023-48022). Every file under cluster/ and jobs/ is read; each way of starting Ray must turn on token
auth (``RAY_AUTH_MODE=token``) and hand every node the token from a private place (a mode-600 file named by
``RAY_AUTH_TOKEN_PATH`` or Ray's default ``~/.ray/auth_token``, or a Kubernetes secret), never on a command line;
a dashboard on 0.0.0.0 is allowed only where token auth is on and nothing else reaches it (pod networks).
``test_the_checks_catch_*`` run the same checks on the exposed configurations this repo used to ship.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from llc_service.credentials import refuse_secrets_in_job
from llc_service.scheduler.job_spec import load_job

ROOT = Path(__file__).resolve().parents[2]
FILES = sorted(p for d in ("cluster", "jobs") for p in (ROOT / d).rglob("*") if p.is_file())


def _rel(p: Path) -> str:
    return str(p.relative_to(ROOT))


def _code(text: str) -> str:
    """Text without comments (# at line start or after whitespace), shell line continuations joined."""
    lines = [re.sub(r"(^|\s)#.*$", "", line) for line in text.splitlines()]
    return re.sub(r"\\\n\s*", " ", "\n".join(lines))


DISABLED = re.compile(r"RAY_AUTH_MODE\W{1,6}disabled", re.IGNORECASE)
OPEN_HOST = re.compile(r"dashboard[-_]host\W{1,6}0\.0\.0\.0")


def shell_problems(text: str) -> list[str]:
    """A script that runs `ray start`: token mode exported, the token from a private file, no open dashboard."""
    code = _code(text)
    starts = [m.start() for m in re.finditer(r"\bray start\b", code)]
    if not starts:
        return []
    problems = []
    before = code[:starts[0]]
    if not re.search(r"export\s+(\w+=\S+\s+)*RAY_AUTH_MODE=token\b", before):
        problems.append("RAY_AUTH_MODE=token is not exported before `ray start`")
    if not re.search(r"export\s+(\w+=\S+\s+)*RAY_AUTH_TOKEN_PATH=", before):
        problems.append("no RAY_AUTH_TOKEN_PATH exported before `ray start` (the token file every node reads)")
    if not re.search(r"umask 0?77|chmod 0?600", before):
        problems.append("the token file is not made private (umask 077 / chmod 600)")
    if re.search(r"(?<!unset )RAY_AUTH_TOKEN=", code) or re.search(r"--(auth-)?token[= ]", code):
        problems.append("a token on a command line (visible in ps): pass RAY_AUTH_TOKEN_PATH instead")
    if OPEN_HOST.search(code):
        problems.append("the dashboard listens on 0.0.0.0: bind it to the head's cluster-internal address")
    return problems


def _env(container: dict) -> dict:
    return {e.get("name"): e for e in container.get("env") or []}


def _containers(template: dict) -> list[dict]:
    return ((template or {}).get("spec") or {}).get("containers") or []


def _container_problems(c: dict, where: str) -> list[str]:
    env = _env(c)
    problems = []
    if (env.get("RAY_AUTH_MODE") or {}).get("value") != "token":
        problems.append(f"{where}: container {c.get('name')} lacks RAY_AUTH_MODE=token")
    tok = env.get("RAY_AUTH_TOKEN") or {}
    if not (tok.get("valueFrom") or {}).get("secretKeyRef"):
        problems.append(f"{where}: container {c.get('name')} does not take RAY_AUTH_TOKEN from a secret")
    if "value" in tok:
        problems.append(f"{where}: container {c.get('name')} has a literal RAY_AUTH_TOKEN value")
    return problems


def kuberay_problems(doc: dict) -> list[str]:
    """RayCluster / RayJob: every Ray container (and the job submitter) gets token mode and the secret's token."""
    spec = doc.get("spec") or {}
    cluster = spec.get("rayClusterSpec", spec) if doc.get("kind") == "RayJob" else spec
    if ((cluster.get("authOptions") or {}).get("mode")) == "token":
        return []  # KubeRay >= 1.5.1 generates the secret and sets the env of every container itself
    problems = []
    groups = [("head", cluster.get("headGroupSpec") or {})]
    groups += [(f"worker group {g.get('groupName')}", g) for g in cluster.get("workerGroupSpecs") or []]
    for where, group in groups:
        for c in _containers(group.get("template")):
            problems += _container_problems(c, where)
    if not groups[0][1]:
        problems.append("no headGroupSpec")
    if doc.get("kind") == "RayJob" and spec.get("submissionMode", "K8sJobMode") == "K8sJobMode":
        submitters = _containers(spec.get("submitterPodTemplate"))
        if not submitters:
            problems.append("RayJob in K8sJobMode without a submitterPodTemplate: its `ray job submit` has no token")
        for c in submitters:
            problems += _container_problems(c, "submitter")
    return problems


def ray_up_problems(doc: dict) -> list[str]:
    """`ray up` config: every `ray start` in token mode, every node given the token file, the dashboard local."""
    problems = []
    starts = [c for key in ("head_start_ray_commands", "worker_start_ray_commands") for c in doc.get(key) or []
              if "ray start" in c]
    if not starts:
        problems.append("no `ray start` in head_start_ray_commands / worker_start_ray_commands")
    for cmd in starts:
        if not re.search(r"RAY_AUTH_MODE=token\b", cmd):
            problems.append(f"`{cmd[:60]}...` runs without RAY_AUTH_MODE=token")
        if OPEN_HOST.search(cmd):
            problems.append("the dashboard listens on 0.0.0.0: keep it on 127.0.0.1 (`ray dashboard` tunnels to it)")
        if re.search(r"RAY_AUTH_TOKEN=", cmd):
            problems.append("a token on a command line")
    mounts = doc.get("file_mounts") or {}
    if not any(str(remote).endswith("/.ray/auth_token") for remote in mounts):
        problems.append("no file_mounts entry puts the token at ~/.ray/auth_token on every node")
    if not any("chmod 600" in c and "auth_token" in c for c in doc.get("setup_commands") or []):
        problems.append("setup_commands do not make the token file private (chmod 600)")
    return problems


def secret_problems(doc: dict) -> list[str]:
    """A shipped Secret is a template: no token committed to the repository."""
    data = {**(doc.get("data") or {}), **(doc.get("stringData") or {})}
    return [f"Secret {doc.get('metadata', {}).get('name')} commits a value for {k!r}" for k, v in data.items() if v]


def file_problems(path: Path) -> list[str]:
    text = path.read_text(errors="replace")
    problems = []
    if DISABLED.search(_code(text)):
        problems.append("RAY_AUTH_MODE=disabled: the job API would accept anyone")
    if path.suffix in (".yaml", ".yml"):
        for doc in yaml.safe_load_all(text):
            if not isinstance(doc, dict):
                continue
            kind = doc.get("kind")
            if kind in ("RayCluster", "RayJob", "RayService"):
                problems += kuberay_problems(doc)
            elif kind == "Secret":
                problems += secret_problems(doc)
            elif "head_start_ray_commands" in doc or "available_node_types" in doc:
                problems += ray_up_problems(doc)
            elif "entrypoint" in doc and path.parent.name == "jobs":
                try:
                    refuse_secrets_in_job(load_job(str(path)).fields, _rel(path))
                except ValueError as exc:
                    problems.append(str(exc))
            elif "ray start" in _code(text) or OPEN_HOST.search(_code(text)):
                problems.append("starts Ray or opens a dashboard but is no deployment kind these checks know")
    elif "ray start" in _code(text) or OPEN_HOST.search(_code(text)):
        problems += shell_problems(text)
    return problems


def test_every_deployment_is_checked():
    names = {_rel(p) for p in FILES}
    assert {"cluster/slurm/llc-service.sbatch", "cluster/ray-up/cluster.yaml", "cluster/kuberay/raycluster.yaml",
            "cluster/kuberay/rayjob.yaml", "cluster/kuberay/ray-auth-token.yaml"} <= names


@pytest.mark.parametrize("path", FILES, ids=_rel)
def test_no_unauthenticated_job_api(path):
    problems = file_problems(path)
    assert not problems, f"{_rel(path)}:\n  " + "\n  ".join(problems)


def test_slurm_token_is_per_allocation_private_and_removed():
    code = _code((ROOT / "cluster/slurm/llc-service.sbatch").read_text())
    assert re.search(r"token_file=\S*\$SLURM_JOB_ID", code)  # one token per allocation
    assert re.search(r"secrets\.token_hex\((\d+)\)", code) and int(re.search(r"token_hex\((\d+)\)", code)[1]) >= 32
    cleanup = code[code.index("cleanup()"):code.index("trap cleanup EXIT")]
    assert 'rm -f "$token_file"' in cleanup
    # the dashboard binds the head's address, and the script submits there (not to 0.0.0.0 or a public name)
    assert '--dashboard-host="$head_ip"' in code and '--address "http://$head_ip:$dash_port"' in code


# the configurations this repository shipped before token auth (trimmed to the lines that matter)
OLD_SBATCH = """
export RAY_AUTH_MODE=disabled                       # the cluster is private to this allocation's nodes
srun --nodes=1 --ntasks=1 -w "$head_node" --overlap \\
  ray start --head --block --node-ip-address="$head_ip" --port="$port" --dashboard-port="$dash_port" \\
  --dashboard-host=0.0.0.0 --ray-client-server-port="$client_port" --temp-dir="$tmp" &
"""
OLD_RAY_UP = {"head_start_ray_commands": ["ray stop", "ray start --head --port=6379 --dashboard-host=0.0.0.0"],
              "worker_start_ray_commands": ["ray start --address=$RAY_HEAD_IP:6379"],
              "file_mounts": {"/home/ubuntu/llc-service": "."}}
OLD_RAYJOB = {"kind": "RayJob", "spec": {
    "entrypoint": "llc-service watch s3://b/run", "submissionMode": "K8sJobMode",
    "rayClusterSpec": {"headGroupSpec": {"rayStartParams": {"dashboard-host": "0.0.0.0"}, "template": {"spec": {
        "containers": [{"name": "ray-head", "env": [{"name": "HF_HUB_OFFLINE", "value": "1"}]}]}}},
        "workerGroupSpecs": [{"groupName": "gpu", "template": {"spec": {"containers": [{"name": "w"}]}}}]}}}


def test_the_checks_catch_the_old_slurm_script(tmp_path):
    path = tmp_path / "llc-service.sbatch"
    path.write_text(OLD_SBATCH)
    problems = "\n".join(file_problems(path))
    assert "RAY_AUTH_MODE=disabled" in problems and "0.0.0.0" in problems and "RAY_AUTH_TOKEN_PATH" in problems
    # a token pasted on the command line is caught too
    assert any("command line" in p for p in shell_problems("export RAY_AUTH_MODE=token\nRAY_AUTH_TOKEN=abc ray start"))


def test_the_checks_catch_the_old_ray_up_and_kuberay_configs():
    problems = "\n".join(ray_up_problems(OLD_RAY_UP))
    assert "RAY_AUTH_MODE=token" in problems and "0.0.0.0" in problems and "auth_token" in problems
    problems = "\n".join(kuberay_problems(OLD_RAYJOB))
    assert "head: container ray-head lacks RAY_AUTH_MODE=token" in problems
    assert "worker group gpu" in problems and "submitterPodTemplate" in problems
    literal = {"name": "c", "env": [{"name": "RAY_AUTH_MODE", "value": "token"},
                                    {"name": "RAY_AUTH_TOKEN", "value": "committed"}]}
    assert any("literal" in p for p in _container_problems(literal, "head"))
    assert secret_problems({"kind": "Secret", "stringData": {"token": "abc"}})
    assert not secret_problems({"kind": "Secret", "stringData": {"token": ""}})
