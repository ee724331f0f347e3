"""The image's entrypoint refuses, before starting anything, the two ways a box could open an
unauthenticated cluster: a head on a non-loopback address without token auth, and a node joining
without the head's token."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from slm import REPO_ROOT

VENV_BIN = Path(sys.executable).parent


def entrypoint(*args, **env_changes):
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_NODE_IP"):
        env.pop(key, None)
    env.update(env_changes)
    return subprocess.run(
        ["bash", "launch/docker-entrypoint.sh", *args, "echo", "STARTED"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "args, env",
    [
        (("--head-ip", "10.11.12.13"), {"RAY_AUTH_MODE": "disabled"}),
        ((), {"RAY_AUTH_MODE": "disabled", "RAY_NODE_IP": "10.11.12.13"}),
    ],
    ids=["flag", "RAY_NODE_IP"],
)
def test_a_head_off_loopback_needs_token_auth(args, env):
    proc = entrypoint(*args, **env)
    assert proc.returncode == 2 and "STARTED" not in proc.stdout
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error:") and "10.11.12.13" in line and "token" in line


@pytest.mark.parametrize(
    "env", [{}, {"RAY_AUTH_MODE": "disabled", "RAY_AUTH_TOKEN": "x" * 32}], ids=["no token", "auth disabled"]
)
def test_joining_needs_the_heads_token(env):
    proc = entrypoint("--join", "10.11.12.13:6379", **env)
    assert proc.returncode == 2 and "STARTED" not in proc.stdout
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error:") and "--join" in line and "RAY_AUTH_TOKEN" in line
