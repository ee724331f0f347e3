"""The GPU box's way in, checked without Docker: the image's Dockerfile lints clean, and its
entrypoint (launch/docker-entrypoint.sh) starts a token-auth Ray head on loopback, to which the
README's `ray job submit --working-dir .` sends a real stage. Its log is what a user reads: no line
twice, no bytecode, short. A relative local store inside the job's temporary copy is refused."""

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from slm import REPO_ROOT
from slm.store import Store

VENV_BIN = Path(sys.executable).parent
CURRENT_CLUSTER = Path("/tmp/ray/ray_current_cluster")
BYTECODE = re.compile(r"\b(LOAD_GLOBAL|LOAD_FAST|RETURN_VALUE|PRECALL|RESUME)\b")


def test_the_dockerfile_lints_clean():
    proc = subprocess.run([str(VENV_BIN / "hadolint"), "Dockerfile"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """The image's entrypoint, run directly: `ray start --head` on 127.0.0.1 with token auth."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    if CURRENT_CLUSTER.exists():
        pytest.fail(f"a Ray cluster is already running on this machine ({CURRENT_CLUSTER}); stop it first")
    root = tmp_path_factory.mktemp("ray-job")
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
        "SLM_CACHE": str(root / "cache"),
        "RAY_AUTH_MODE": "token",
    }
    env.pop("RAY_ADDRESS", None)
    started = subprocess.run(
        ["bash", "launch/docker-entrypoint.sh", "true"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    try:
        assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
        yield root, env
    finally:
        subprocess.run(["ray", "stop", "--force"], env=env, capture_output=True, timeout=120)
        CURRENT_CLUSTER.unlink(missing_ok=True)


def submit(env, *command, submission_id=None):
    """The README's command: `ray job submit --working-dir . -- python launch/stage.py ...`."""
    submission_id = submission_id or f"test-{uuid.uuid4().hex[:8]}"
    proc = subprocess.run(
        [
            "ray",
            "job",
            "submit",
            "--address",
            "http://127.0.0.1:8265",
            "--submission-id",
            submission_id,
            "--working-dir",
            ".",
            "--",
            "python",
            *command,
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    logs = subprocess.run(
        ["ray", "job", "logs", "--address", "http://127.0.0.1:8265", submission_id],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc, logs.stdout


def test_the_job_api_needs_the_token(ray_head):
    _, env = ray_head
    proc = subprocess.run(
        ["ray", "job", "list", "--address", "http://127.0.0.1:8265"],
        cwd=REPO_ROOT,
        env={**env, "RAY_AUTH_MODE": "disabled"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "auth" in (proc.stdout + proc.stderr).lower()


def test_a_relative_store_in_the_jobs_copy_is_refused(ray_head):
    _, env = ray_head
    proc, logs = submit(env, "launch/stage.py", "pretrain", "--store", "artifacts/job-store")
    assert proc.returncode != 0
    errors = [line for line in logs.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "relative path" in errors[0] and "--store with an absolute path" in errors[0], logs
    assert "Traceback" not in logs


@pytest.mark.slow
def test_a_stage_submitted_as_a_job_trains_promotes_and_logs_cleanly(ray_head):
    root, env = ray_head
    store_dir = root / "store"
    proc, logs = submit(
        env,
        "launch/stage.py",
        "pretrain",
        "--build-data",
        "--store",
        str(store_dir),
        "--set",
        "train.max_steps=6",
        "--set",
        "train.save_steps=3",
        "--set",
        "sweep.subjects=[astronomy]",
        "--set",
        "sweep.limit=4",
        "--set",
        "sweep.bench=null",
        "--set",
        "merge.enabled=false",
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    latest = Store.open(str(store_dir)).read_json("champions/tiny-ff/latest.json")
    assert latest["version"] == "v1-pretrain"
    assert "[ray] connecting to the running cluster" in logs and "promoted tiny-ff@v1-pretrain" in logs

    lines = [line for line in logs.splitlines() if line.strip()]
    print(f"job log: {len(lines)} non-empty lines")
    repeated = sorted({line for line in lines if lines.count(line) > 1})
    assert not repeated, repeated
    assert not [line for line in lines if BYTECODE.search(line)]
    assert not [line for line in lines if "Failed to query Ray Train Controller" in line]
    assert len(lines) <= 60, "\n".join(lines)
    # ~10 progress lines a run, not one per step: a 6-step run shows each of its steps, and a line each for
    # the validation loss at steps 0 (before training), 3 and 6
    assert sum("[pretrain] step" in line for line in lines) <= 9
