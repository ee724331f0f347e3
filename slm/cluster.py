"""Connect to a running Ray cluster (`ray job submit`, `ray start`) or start a local one on loopback."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from slm import REPO_ROOT

# Keep a locally started cluster (and the gloo group of Train workers) on 127.0.0.1.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
# Dedup would fold the two ranks' warnings together; progress lines come from rank 0 only anyway.
os.environ.setdefault("RAY_DEDUP_LOGS", "1")


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
    address = running_cluster_address()
    if address:
        print(f"[ray] connecting to the running cluster ({address})", file=sys.stderr, flush=True)
        ray.init(address=address, log_to_driver=True)
    else:
        print("[ray] starting a local cluster on 127.0.0.1 (no dashboard)", file=sys.stderr, flush=True)
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, _node_ip_address="127.0.0.1",
                 log_to_driver=True)
