"""Ray token authentication for the job API client (``llc-service submit``).

Every shipped deployment starts Ray with ``RAY_AUTH_MODE=token``: the dashboard's job API (which runs any command
as the cluster's user) answers 401 to a request without ``Authorization: Bearer <token>``. The client finds the
token where Ray itself looks, in this order (Ray 2.60, ``ray._private.authentication``):

1. ``RAY_AUTH_TOKEN`` (the token itself; Kubernetes secrets arrive this way),
2. ``RAY_AUTH_TOKEN_PATH`` (a file holding it; the Slurm script writes one per allocation, mode 600),
3. ``~/.ray/auth_token`` when ``RAY_AUTH_MODE=token`` (what ``ray get-auth-token --generate`` writes).

The header is built here and handed to ``JobSubmissionClient(headers=...)`` instead of relying on Ray's own
lookup, which reads ``RAY_AUTH_MODE`` once per process and is silent when the token is missing. Before
submitting, the public ``/api/authentication_mode`` endpoint says whether the cluster wants a token, so a missing
one is one clear error instead of a 401 traceback.
"""

from __future__ import annotations

import json
import os
import stat
import urllib.request
from pathlib import Path

from llc_service.credentials import CredentialsError

DEFAULT_TOKEN_PATH = Path("~/.ray/auth_token")

WHERE = ("give it as RAY_AUTH_TOKEN_PATH=<file holding the token> (mode 600; the Slurm script prints its file), or "
         "RAY_AUTH_TOKEN in the environment (Kubernetes: from the ray-auth-token secret, e.g. "
         "RAY_AUTH_TOKEN=$(kubectl get secret ray-auth-token -o jsonpath='{.data.token}' | base64 -d)), or run "
         "with RAY_AUTH_MODE=token and the token in ~/.ray/auth_token; see docs/cluster.md#security")


def _read_token_file(path: Path, source: str) -> str:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        text = path.read_text().strip()
    except OSError as exc:
        raise CredentialsError(f"{source}: cannot read the Ray token file {path} ({exc.strerror or exc})") from None
    if mode & 0o077:
        raise CredentialsError(f"{source}: the Ray token file {path} is readable by others (mode {mode:03o}): "
                               f"chmod 600 {path}")
    if not text:
        raise CredentialsError(f"{source}: the Ray token file {path} is empty")
    return text


def client_token(env: dict | None = None) -> str | None:
    """The token this client should send, or None when none is configured (see the module doc for the order)."""
    env = os.environ if env is None else env
    if env.get("RAY_AUTH_TOKEN", "").strip():
        return env["RAY_AUTH_TOKEN"].strip()
    if env.get("RAY_AUTH_TOKEN_PATH"):
        return _read_token_file(Path(env["RAY_AUTH_TOKEN_PATH"]).expanduser(), "RAY_AUTH_TOKEN_PATH")
    default = DEFAULT_TOKEN_PATH.expanduser()
    if env.get("RAY_AUTH_MODE", "").lower() == "token" and default.exists():
        return _read_token_file(default, "RAY_AUTH_MODE=token")
    return None


def auth_headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def cluster_auth_mode(address: str, timeout: float = 10.0) -> str | None:
    """``"token"`` / ``"disabled"`` from the dashboard's public endpoint; None if it cannot tell (old Ray, down)."""
    try:
        with urllib.request.urlopen(f"{address.rstrip('/')}/api/authentication_mode", timeout=timeout) as r:
            return str(json.loads(r.read().decode()).get("authentication_mode"))
    except (OSError, ValueError, AttributeError):
        return None


def check_client_auth(address: str, token: str | None) -> None:
    """Refuse early, with where to put it, when the cluster requires a token and this client has none."""
    if token is None and cluster_auth_mode(address) == "token":
        raise CredentialsError(f"the Ray cluster at {address} requires a token (RAY_AUTH_MODE=token) and none is "
                               f"configured here: {WHERE}")


def explain_auth_error(exc: BaseException, address: str, token: str | None) -> str | None:
    """A user-facing line for a 401/403 from the job API, or None if ``exc`` is something else."""
    text = str(exc)
    if type(exc).__name__ != "AuthenticationError" and "401" not in text and "403" not in text:
        return None
    if token is None or "Authentication required" in text or "401" in text:
        return f"the Ray cluster at {address} requires a token and this request carried none: {WHERE}"
    return (f"the Ray cluster at {address} rejected the token (not this cluster's token: each Slurm allocation and "
            f"each Kubernetes secret has its own): {WHERE}")
