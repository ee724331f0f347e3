"""`slm cluster check`: what to know about a Ray cluster before a long job goes on it.

Per node (a Ray task pinned to each alive node): its address, the network interface that address is
on, CPUs and GPUs (by name), the project commit its code is at, the NCCL/gloo interface variables
its workers see, and a write/read/delete probe of the store from that node. Across the cluster: an
all-reduce over every training worker (Ray Train, gloo on CPU, NCCL on GPU) with its bus bandwidth.
Refused: nodes at different commits, a node that cannot reach the store, and a local store on a
cluster of more than one node unless `cluster.store_shared` says it is a shared filesystem (each
node would write a store of its own, and Ray Train requires shared storage for multi-node
checkpoints). Ray has `ray status` for resources, but nothing that checks these together, hence this.
"""

from __future__ import annotations

import os
import socket
import time
import uuid

# The variables that pick the interface collectives use (set through cluster.env on training workers).
INTERFACE_VARS = ("NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME", "NCCL_IB_DISABLE", "NCCL_DEBUG")
PROBE_PREFIX = "_preflight"


def interface_of(ip: str) -> str | None:
    """The network interface holding `ip` on this machine (lo for 127.x), from psutil."""
    import psutil

    for name, addresses in psutil.net_if_addrs().items():
        if any(a.family == socket.AF_INET and a.address == ip for a in addresses):
            return name
    return "lo" if ip.startswith("127.") else None


def node_facts(store_uri: str) -> dict:
    """Runs on one node (a Ray task): what that node is, and whether it can use the store."""
    import platform

    import ray

    from slm.records import git_commit

    ip = ray.util.get_node_ip_address()
    gpus = []
    try:
        import torch

        gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # a node without a working CUDA stack reports no GPU; the check compares counts
        gpus = []
    facts = {
        "ip": ip,
        "hostname": socket.gethostname(),
        "interface": interface_of(ip),
        "cpus": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "gpus": gpus,
        "commit": git_commit(),
        "env": {k: os.environ[k] for k in INTERFACE_VARS if k in os.environ},
        "slm_cache": os.environ.get("SLM_CACHE"),
    }
    facts["store"] = probe_store(store_uri, f"{PROBE_PREFIX}/{ip}-{uuid.uuid4().hex[:8]}.json")
    return facts


def probe_store(store_uri: str, key: str) -> dict:
    """Write, read back and delete one small object: {"ok", "seconds"} or {"ok": False, "error"}."""
    from slm.store import Store

    start = time.perf_counter()
    try:
        store = Store.open(store_uri)
        payload = {"probe": key, "at": time.time()}
        store.write_json(key, payload)
        if store.read_json(key) != payload:
            return {"ok": False, "error": f"{store.url(key)} read back something else than was written"}
        store.delete(key)
        if store.exists(key):
            return {"ok": False, "error": f"{store.url(key)} is still there after delete"}
    except Exception as exc:  # reported per node, in one line, by check()
        return {"ok": False, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
    return {"ok": True, "seconds": round(time.perf_counter() - start, 3)}


def allreduce_loop(config: dict) -> None:
    """In every Ray Train worker: all-reduce `mb` MB a few times; rank 0 reports the bus bandwidth."""
    import torch
    import torch.distributed as dist
    from ray import train

    numel = int(config["mb"] * 1e6 / 4)
    device = train.torch.get_device()
    tensor = torch.ones(numel, dtype=torch.float32, device=device)
    dist.all_reduce(tensor)  # warm-up: the first call sets the connections up
    world = dist.get_world_size()
    if float(tensor[0]) != world:
        raise RuntimeError(f"all-reduce summed {float(tensor[0])} instead of {world}")
    dist.barrier()
    start = time.perf_counter()
    for _ in range(config["iters"]):
        dist.all_reduce(tensor)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / config["iters"]
    # nccl-tests' bus bandwidth for all-reduce: bytes * 2(n-1)/n per second
    busbw = numel * 4 * 2 * (world - 1) / world / seconds / 1e9
    if dist.get_rank() == 0:  # Ray Train (2.60) keeps no metrics without a checkpoint: the store carries them
        from slm.store import Store

        Store.open(config["store"]).write_json(
            config["key"],
            {
                "world_size": world,
                "backend": dist.get_backend(),
                "seconds": seconds,
                "busbw_gb_s": busbw,
                "rank0_ip": os.environ.get("MASTER_ADDR"),
            },
        )
    dist.barrier()


def run_allreduce(
    workers: int, use_gpu: bool, cpus_per_worker: float, env: dict, store_uri: str, mb: float = 16
) -> dict:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from slm.cluster import WORK_ENV
    from slm.store import Store, cache_dir

    key = f"{PROBE_PREFIX}/allreduce-{uuid.uuid4().hex[:8]}.json"
    trainer = TorchTrainer(
        allreduce_loop,
        train_loop_config={"mb": mb, "iters": 5, "store": store_uri, "key": key},
        scaling_config=ScalingConfig(
            num_workers=workers,
            use_gpu=use_gpu,
            resources_per_worker={"CPU": cpus_per_worker},
            placement_strategy="SPREAD",
        ),
        run_config=RunConfig(
            name=f"preflight-{uuid.uuid4().hex[:8]}",
            storage_path=str(cache_dir() / "ray_results"),
            worker_runtime_env={"env_vars": {**WORK_ENV, **env}},
        ),
    )
    trainer.fit()
    store = Store.open(store_uri)
    try:
        return store.read_json(key)
    finally:
        store.delete(key)


def check(pipeline, store_uri: str, allreduce: bool = True) -> tuple[dict, list[str]]:
    """The report (nodes, all-reduce) and the problems found (empty: the cluster is ready)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from slm.cluster import WORK_ENV
    from slm.engine import check_store_reachable_from_every_node

    spec = pipeline.cluster
    alive = [n for n in ray.nodes() if n.get("Alive")]
    problems = []
    check_store_reachable_from_every_node(store_uri, spec.store_shared)
    env = {**WORK_ENV, **spec.env}
    tasks = {
        node["NodeID"]: ray.remote(node_facts)
        .options(
            num_cpus=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False),
            runtime_env={"env_vars": env},
        )
        .remote(store_uri)
        for node in alive
    }
    nodes = []
    for node in alive:
        facts = ray.get(tasks[node["NodeID"]])
        resources = node.get("Resources", {})
        facts["ray_cpus"] = resources.get("CPU", 0)
        facts["ray_gpus"] = resources.get("GPU", 0)
        nodes.append(facts)
        if not facts["store"]["ok"]:
            problems.append(f"node {facts['ip']} cannot use the store: {facts['store']['error']}")
        if facts["ray_gpus"] and len(facts["gpus"]) < facts["ray_gpus"]:
            problems.append(
                f"node {facts['ip']}: Ray counts {facts['ray_gpus']:g} GPUs, torch sees {len(facts['gpus'])}"
            )
    commits = {n["commit"] for n in nodes}
    if len(commits) > 1:
        problems.append(
            "nodes run different code: " + ", ".join(f"{n['ip']} at {n['commit'] or 'unknown'}" for n in nodes)
        )
    report = {"nodes": nodes, "store": store_uri, "allreduce": None}
    if allreduce:
        try:
            report["allreduce"] = run_allreduce(spec.workers, spec.use_gpu, spec.cpus_per_worker, spec.env, store_uri)
        except Exception as exc:
            problems.append(f"all-reduce over {spec.workers} workers failed: {str(exc).splitlines()[0][:300]}")
    return report, problems


def render(report: dict, problems: list[str]) -> list[str]:
    lines = [f"{len(report['nodes'])} node(s) alive; store {report['store']}"]
    for n in report["nodes"]:
        gpus = ", ".join(n["gpus"]) if n["gpus"] else "no GPU"
        env = " ".join(f"{k}={v}" for k, v in n["env"].items()) or "no NCCL/gloo interface variables"
        store = f"store ok ({n['store']['seconds']:.2f} s)" if n["store"]["ok"] else "STORE FAILED"
        lines.append(
            f"  {n['ip']} ({n['hostname']}, interface {n['interface'] or '?'}): {n['ray_cpus']:g} CPUs for Ray of "
            f"{n['cpus']}, {gpus}; commit {n['commit'] or 'unknown'}; {env}; {store}"
        )
    a = report.get("allreduce")
    if a:
        lines.append(
            f"all-reduce: {a['world_size']} workers, {a['backend']}, {a['seconds'] * 1e3:.1f} ms per 16 MB, "
            f"bus bandwidth {a['busbw_gb_s']:.2f} GB/s (rank 0 at {a['rank0_ip']})"
        )
    lines += [f"problem: {p}" for p in problems]
    lines.append("cluster check: " + ("ready" if not problems else f"{len(problems)} problem(s)"))
    return lines
