"""Where ``llc-service submit`` finds its Ray token, and the refusals around it (no head needed; the real-head
checks are in test_submit_auth.py)."""

from __future__ import annotations

import pytest

from llc_service.credentials import CredentialsError
from llc_service.scheduler.ray_auth import auth_headers, check_client_auth, client_token, explain_auth_error
from tests.scheduler.ray_head import free_ports


def _private(path, text: str, mode: int = 0o600):
    path.write_text(text)
    path.chmod(mode)
    return str(path)


def test_token_sources_in_rays_order(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    f = _private(tmp_path / "tok", "from-file\n")
    assert client_token({}) is None
    assert client_token({"RAY_AUTH_TOKEN_PATH": f}) == "from-file"
    assert client_token({"RAY_AUTH_TOKEN": "from-env", "RAY_AUTH_TOKEN_PATH": f}) == "from-env"
    # ~/.ray/auth_token only when the user asked for token mode (it is not sent to every cluster)
    (tmp_path / ".ray").mkdir()
    _private(tmp_path / ".ray" / "auth_token", "from-default")
    assert client_token({}) is None
    assert client_token({"RAY_AUTH_MODE": "token"}) == "from-default"
    assert auth_headers("t") == {"Authorization": "Bearer t"} and auth_headers(None) == {}


@pytest.mark.parametrize("mode, text, words", [(0o640, "tok", "chmod 600"), (0o600, "  \n", "empty")])
def test_bad_token_files_are_refused_without_printing_them(tmp_path, mode, text, words):
    f = _private(tmp_path / "tok", text, mode)
    with pytest.raises(CredentialsError, match=words) as exc:
        client_token({"RAY_AUTH_TOKEN_PATH": f})
    assert "tok\n" not in str(exc.value)
    with pytest.raises(CredentialsError, match="cannot read"):
        client_token({"RAY_AUTH_TOKEN_PATH": str(tmp_path / "missing")})


def test_unreachable_cluster_is_left_to_the_client(tmp_path):
    # nothing listens there: no auth verdict, the job client reports the connection error as before
    (port,) = free_ports(1)
    check_client_auth(f"http://127.0.0.1:{port}", None)


def test_auth_errors_are_explained():
    from ray.exceptions import AuthenticationError

    missing = explain_auth_error(AuthenticationError("Authentication required: Unauthorized"), "http://h:8265", None)
    assert "requires a token" in missing and "RAY_AUTH_TOKEN_PATH" in missing
    wrong = explain_auth_error(AuthenticationError("Authentication failed: Forbidden"), "http://h:8265", "t")
    assert "rejected the token" in wrong
    assert explain_auth_error(ConnectionError("Failed to connect"), "http://h:8265", None) is None
