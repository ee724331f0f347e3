"""A watcher beside a driver that started a local Ray cluster: when the driver dies without shutting
the cluster down (SIGKILL, the OOM killer), it kills the Ray processes the driver left behind.

Ray ties its head processes (gcs_server, raylet, the dashboard) to the driver with the kernel's
fate-sharing, and with fate-sharing on it starts no reaper of its own; but the agents the raylet
starts (ray::DashboardAgent, ray::RuntimeEnvAgent) outlive it, re-parented to init, and do not stop
on SIGTERM. Nothing can ask a dead process for its children, so the watcher records the driver's Ray
descendants while it lives and, once it is gone, stops those still running (SIGTERM, then SIGKILL).

    python -m slm.reaper DRIVER_PID      (started by slm.cluster.connect; it exits with the driver)
"""

from __future__ import annotations

import os
import subprocess
import sys

import psutil

POLL_SECONDS = 1.0
GRACE_SECONDS = 3.0
_started_for: int | None = None
_watcher: subprocess.Popen | None = None  # kept referenced: it runs until this process is gone


def is_ray_process(process: psutil.Process) -> bool:
    try:
        command = " ".join(process.cmdline()) or process.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    return "ray" in command.lower()


def watch(driver_pid: int) -> list[int]:
    """Block until the driver exits; then stop the Ray processes it left. Returns their pids."""
    try:
        driver = psutil.Process(driver_pid)
    except psutil.NoSuchProcess:
        return []
    seen: dict[int, psutil.Process] = {}
    me = os.getpid()
    while True:
        try:
            for child in driver.children(recursive=True):
                if child.pid != me and child.pid not in seen and is_ray_process(child):
                    seen[child.pid] = child  # a psutil.Process remembers its start time: no pid reuse
            driver.wait(timeout=POLL_SECONDS)
            break
        except psutil.TimeoutExpired:
            continue
        except psutil.NoSuchProcess:
            break
    left = [p for p in seen.values() if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    for process in left:
        try:
            process.terminate()
        except psutil.NoSuchProcess:
            pass
    _, stubborn = psutil.wait_procs(left, timeout=GRACE_SECONDS)
    for process in stubborn:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    return [p.pid for p in left]


def start_for_this_driver() -> None:
    """Start the watcher once per driver process, in its own session (Ctrl-C to the terminal's
    process group reaches the driver, which shuts Ray down itself; the watcher stays to check)."""
    global _started_for, _watcher
    if _started_for == os.getpid():
        return
    _watcher = subprocess.Popen(
        [sys.executable, "-m", "slm.reaper", str(os.getpid())],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )
    _started_for = os.getpid()


if __name__ == "__main__":
    watch(int(sys.argv[1]))
