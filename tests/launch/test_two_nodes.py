"""A stage across two Ray nodes: a head on 127.0.0.2 and a node joined on 127.0.0.3 (tests/support/
loopback_cluster.py says why not 127.0.0.1), token auth on, each node with its own Ray temp directory
and SLM_CACHE.

Two workers placed one per node (STRICT_SPREAD) train under DeepSpeed ZeRO-2 over gloo and checkpoint
to the S3 server the tests run, each node's local rank 0 uploading its own optimizer shards; the sweep's
scoring tasks run on both nodes; `slm cluster check` passes there and refuses a local store.
Loopback is not a network: this proves placement, per-node state, uploads and the checks, not NCCL or
bandwidth."""

import ipaddress
import json
import os
import subprocess
import sys

import pytest

from slm import REPO_ROOT
from slm.store import Store
from tests.support.loopback_cluster import LoopbackCluster
from tests.support.seaweed import environ

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory, s3_server):
    import ray

    if ray.is_initialized():
        ray.shutdown()
    root = tmp_path_factory.mktemp("two-nodes")
    cluster = LoopbackCluster(root)
    with environ(s3_server.env()):  # every node's workers reach the store with these
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.stop()


def run(cluster, *args, timeout=900):
    env = {**os.environ, **cluster.client_env(), "SLM_CACHE": str(cluster.root / "driver-cache")}
    return subprocess.run(
        [sys.executable, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_every_node_is_on_loopback(two_nodes):
    ips = two_nodes.alive_ips()
    assert sorted(ips) == ["127.0.0.2", "127.0.0.3"]
    assert all(ipaddress.ip_address(ip) in ipaddress.ip_network("127.0.0.0/8") for ip in ips)


def test_a_stage_trains_on_both_nodes_and_the_sweep_uses_both(two_nodes, s3_server):
    s3_server.create_bucket("two-nodes")
    uri = "s3://two-nodes/line"
    proc = run(
        two_nodes,
        "launch/stage.py",
        "pretrain",
        "--build-data",
        "--store",
        uri,
        "--set",
        "cluster.workers=2",
        "--set",
        "cluster.placement=STRICT_SPREAD",
        "--set",
        "train.max_steps=8",
        "--set",
        "train.save_steps=4",
        "--set",
        "sweep.limit=4",
        "--set",
        "sweep.bench=null",  # MMLU alone shows where the scoring tasks ran; the bench costs a minute here
        "--set",
        "sweep.heldout=null",
        "--set",
        "sweep.drift=null",
        "--set",
        "cluster.env.GLOO_SOCKET_IFNAME=lo",  # forwarded to every worker: gloo on the loopback interface
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    store = Store.open(uri)
    (run_id,) = store.children("runs/pretrain")
    prefix = f"runs/pretrain/{run_id}"
    facts = store.read_json(f"{prefix}/train/engine.json")
    assert facts["world_size"] == 2 and sorted(facts["worker_nodes"]) == ["127.0.0.2", "127.0.0.3"]
    # each rank is its node's local rank 0: both uploaded their own ZeRO-2 optimizer shard, rank 0 marked
    newest = f"{prefix}/checkpoints/checkpoint-8"
    files = store.tree_manifest(newest)["files"]
    shards = sorted(f for f in files if "optim_states" in f)
    assert len(shards) == 2 and [("zero_pp_rank_0" in f, "zero_pp_rank_1" in f) for f in shards] == [
        (True, False),
        (False, True),
    ], shards
    assert not store.list(f"{prefix}/checkpoints/_uploads")  # the per-node upload records, merged and removed
    scored_on = set()
    for name in ("checkpoint-4", "checkpoint-8"):
        candidate = store.read_json(f"{prefix}/sweep/{name}.json")
        scored_on.add(candidate["scores"]["node"])
    assert scored_on == {"127.0.0.2", "127.0.0.3"}, scored_on


def test_cluster_check_passes_on_s3_and_refuses_a_local_store(two_nodes, s3_server, tmp_path):
    s3_server.create_bucket("preflight")
    proc = run(
        two_nodes,
        "launch/cluster.py",
        "check",
        "--store",
        "s3://preflight/x",
        "--json",
        "--set",
        "cluster.env.GLOO_SOCKET_IFNAME=lo",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert sorted(n["ip"] for n in report["nodes"]) == ["127.0.0.2", "127.0.0.3"]
    assert all(n["store"]["ok"] and n["interface"] == "lo" for n in report["nodes"])
    assert all(n["env"] == {"GLOO_SOCKET_IFNAME": "lo"} for n in report["nodes"])  # cluster.env, on every node
    assert len({n["commit"] for n in report["nodes"]}) == 1
    assert {n["slm_cache"] for n in report["nodes"]} == {
        str(two_nodes.node_dir("head") / "cache"),
        str(two_nodes.node_dir("node2") / "cache"),
    }
    assert report["allreduce"]["world_size"] == 2 and report["allreduce"]["busbw_gb_s"] > 0
    assert report["problems"] == []

    local = run(two_nodes, "launch/cluster.py", "check", "--store", str(tmp_path / "store"))
    errors = [line for line in local.stderr.splitlines() if line.startswith("error:")]
    assert local.returncode == 2 and len(errors) == 1, local.stderr[-3000:]
    assert "local directory" in errors[0] and "2 nodes" in errors[0] and "store_shared" in errors[0]
    assert "Traceback" not in local.stderr
