"""A driver that started a local Ray cluster and is SIGKILLed leaves no Ray process behind."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from slm import REPO_ROOT

pytestmark = pytest.mark.slow  # a real local Ray cluster (about 20 s)

DRIVER = textwrap.dedent(
    """
    import time
    import ray
    from slm import cluster

    cluster.running_cluster_address = lambda: None  # a cluster of its own, even beside another test's
    cluster.connect()
    print("READY", ray.get(ray.remote(lambda: 1).remote()), flush=True)
    time.sleep(600)
    """
)


def ray_descendants(pid: int) -> list[psutil.Process]:
    out, todo = {}, [psutil.Process(pid)]
    while todo:
        for child in todo.pop().children():
            if child.pid not in out:
                out[child.pid] = child
                todo.append(child)
    return [p for p in out.values() if "slm.reaper" not in " ".join(p.cmdline())]


def test_a_sigkilled_driver_leaves_no_ray_process_behind():
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        start_new_session=True,
    )
    tracked = []
    try:
        assert driver.stdout.readline().startswith("READY"), "the driver did not start its cluster"
        time.sleep(3)  # the raylet starts its agents after the first task
        tracked = ray_descendants(driver.pid)
        names = {p.name() for p in tracked}
        assert {"raylet", "gcs_server"} <= names, names
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        deadline = time.time() + 30
        while time.time() < deadline:
            alive = [p for p in tracked if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
            if not alive:
                break
            time.sleep(1)
        assert not alive, [(p.pid, p.name(), p.ppid()) for p in alive]
    finally:
        driver.kill()
        for p in tracked:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
