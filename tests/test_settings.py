"""Settings checks that stop a badly configured server before it starts: the admin token must
be strong enough to guard model load/unload and traffic changes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

from serving.settings import ADMIN_TOKEN_MIN_LENGTH, Settings
from tests.server_process import DEMO_REPO, ROOT

STRONG = "0123456789abcdef01234567"  # exactly 24 characters


@pytest.mark.parametrize("token", ["x", "change-me", STRONG[:-1]])
def test_a_short_admin_token_is_refused(token: str) -> None:
    with pytest.raises(ValidationError, match=r"openssl rand -hex 24"):
        Settings(admin_token=token)


def test_admin_token_length_whitespace_and_unset() -> None:
    assert len(STRONG) == ADMIN_TOKEN_MIN_LENGTH == 24
    assert Settings(admin_token=STRONG).admin_token == STRONG
    # a Secret written from a file usually ends in a newline: it must not become part of the token
    assert Settings(admin_token=f"  {STRONG}\n").admin_token == STRONG
    with pytest.raises(ValidationError):
        Settings(admin_token=f"{STRONG[:-1]}\n ")
    assert Settings(admin_token="").admin_token is None  # empty = unset: admin endpoints off (403)
    assert Settings().admin_token is None


@pytest.mark.parametrize("token", ["x", "short-token-from-a-demo"])
def test_serve_with_a_short_token_exits_with_one_clear_line(token: str) -> None:
    env = {**os.environ, "SERVING_ADMIN_TOKEN": token}
    done = subprocess.run(
        [sys.executable, "-m", "serving.cli", "serve", "--model-repo", str(DEMO_REPO), "--http-port", "0"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0] == (
        f"serving: error: SERVING_ADMIN_TOKEN is {len(token)} character{'s' if len(token) > 1 else ''} "
        "long; it guards model load/unload "
        "and traffic changes, so use at least 24: SERVING_ADMIN_TOKEN=$(openssl rand -hex 24)"
    )


def test_other_bad_settings_also_exit_with_one_line() -> None:
    env = {**os.environ, "SERVING_HTTP_PORT": "70000"}
    done = subprocess.run(
        [sys.executable, "-m", "serving.cli", "serve", "--model-repo", str(DEMO_REPO)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "serving: error: SERVING_HTTP_PORT: Input should be less than or equal to 65535"
    ]
