"""Connect to a running Ray cluster (`ray job submit`, `ray start`) or start a local one on loopback."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from slm import REPO_ROOT
from slm.log import log

# Keep a locally started cluster (and the gloo group of Train workers) on 127.0.0.1.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
# Dedup would fold the two ranks' warnings together; progress lines come from rank 0 only anyway.
os.environ.setdefault("RAY_DEDUP_LOGS", "1")
# Processes of a cluster this driver starts inherit these: Ray Train's print patch would send every
# worker line to the log twice, and its preemption watcher (cloud spot notices) has nothing to watch
# on a local cluster. A cluster started with `ray start` takes them from launch/docker-entrypoint.sh.
LOCAL_CLUSTER_ENV = {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}
# Ray starts its worker processes at nice 15 (RayConfig worker_niceness) so that no task can starve the
# raylet; the scheduler then gives a training step or a scoring task about 3% of a core against any
# nice-0 process that wants the same core (measured: make bench's engine at 0.74-0.89x a plain loop
# on 2 cores, the loop running at nice 0 beside the same Ray daemons). Training workers and sweep tasks
# are the job itself, so they run at 0, as Ray's own job manager runs a job's driver.
WORK_ENV = {"RAY_worker_niceness": "0"}


def _quiet_logging():
    """Warnings and errors from Ray's own loggers in this job's processes (Train's controller and workers
    announce every resource request and process group at INFO); the stage's lines are written directly."""
    import ray

    return ray.LoggingConfig(encoding="TEXT", log_level="WARNING")


def running_cluster_address() -> str | None:
    if os.environ.get("RAY_ADDRESS"):
        address = os.environ["RAY_ADDRESS"]
        return "auto" if address.startswith("http") else address  # a dashboard URL names the job API
    if Path("/tmp/ray/ray_current_cluster").exists():
        return "auto"
    return None


def in_job_working_dir_copy() -> bool:
    """True when this code runs from the copy `ray job submit --working-dir` makes (deleted with the job)."""
    return "runtime_resources" in REPO_ROOT.parts


def connect() -> None:
    import ray

    if ray.is_initialized():
        return
    quiet = _quiet_logging()
    address = running_cluster_address()
    if address:
        log(f"[ray] connecting to the running cluster ({address})")
        # On a node started on a chosen interface (launch/docker-entrypoint.sh --head-ip / RAY_NODE_IP) the
        # driver is on that address too; left to itself Ray takes the machine's default route's address.
        node_ip = {"_node_ip_address": os.environ["RAY_NODE_IP"]} if os.environ.get("RAY_NODE_IP") else {}
        ray.init(address=address, log_to_driver=True, logging_config=quiet, **node_ip)
    else:
        # The dashboard (loopback only; Ray 2.60 turns token auth on) serves the state API that Ray
        # Train's placement-group cleaner polls; without it every stage logs its failed queries.
        log("[ray] starting a local cluster on 127.0.0.1 (dashboard on 127.0.0.1 only)")
        for key, value in LOCAL_CLUSTER_ENV.items():
            os.environ.setdefault(key, value)
        from slm import reaper

        reaper.start_for_this_driver()  # the cluster must not outlive a driver killed without a shutdown
        ray.init(
            num_cpus=os.cpu_count(),
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            _node_ip_address="127.0.0.1",
            log_to_driver=True,
            logging_level=logging.WARNING,
            logging_config=quiet,
        )
