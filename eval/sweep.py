"""Score every candidate of a stage (its checkpoints, merges, and its precursor for reference).

Each candidate is scored in its own Ray task (one GPU each on a GPU cluster) on MMLU through lm-eval
and on the TRUTH-list bench. Scores are cached in the store under the weights' checksum and the
eval settings, so a re-run, or the same weights appearing in another stage, is not scored twice.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from pathlib import Path

from slm import layout
from slm.config import SweepSpec, config_digest, resolve_path
from slm.errors import UserError, find_user_error
from slm.eval import bench, mmlu
from slm.eval.local_data import LOCAL_TASKS, check_tasks, served_from
from slm.eval.scores import Candidate, Scores
from slm.init_checks import check_weights
from slm.log import log
from slm.modeling import load_model, load_tokenizer
from slm.records import load_record, now
from slm.refs import WEIGHT_SUFFIX, ModelRef, StoreRef
from slm.store import Store, fetch_tree_cached, sha256_file

# lm-eval, torch and ray (and eval.lm, built on lm-eval and torch) are imported inside the functions
# that score or launch scoring: reading scores and digests should not pay for them.

# Files of a checkpoint tree that make up the HF model (not optimizer shards, RNG or trainer state).
MODEL_FILES = (".json", WEIGHT_SUFFIX, ".txt", ".model", ".jinja")
NOT_MODEL = ("trainer_state.json", "_COMPLETE.json")


def is_model_file(rel: str) -> bool:
    return "/" not in rel and rel.endswith(MODEL_FILES) and rel not in NOT_MODEL


def _digest(weights: list[tuple[str, str]], where: str) -> str:
    if not weights:
        raise UserError(f"{where}: no safetensors weights")
    return hashlib.sha256(json.dumps(sorted(weights)).encode()).hexdigest()[:16]


def weights_digest(store: Store, key: str) -> str:
    files = store.tree_manifest(key)["files"]
    return _digest(
        [(rel, info["sha256"]) for rel, info in files.items() if rel.endswith(WEIGHT_SUFFIX)], store.url(key)
    )


def model_ref(store: Store, cand: Candidate) -> ModelRef:
    """A candidate's model: a tree in this store (`key`), or any resolved reference (`ref`)."""
    return cand.ref or StoreRef(spec=f"store:{cand.key}", store=store.uri, key=cand.key)


def ref_weights_digest(ref: ModelRef) -> str:
    """The same digest for the same weights, wherever they live: scores are shared through the cache.
    A store tree's weight files are checked against its marker first: the digest (and so any cached
    score) stands for the recorded weights, so weights changed in place are refused, never scored as those."""
    if isinstance(ref, StoreRef):
        store = Store.open(ref.store)
        store.verify_in_place(ref.key, include=lambda rel: rel.endswith(WEIGHT_SUFFIX))
        return weights_digest(store, ref.key)
    path = ref.materialize()
    return _digest([(p.name, sha256_file(p)) for p in path.iterdir() if p.name.endswith(WEIGHT_SUFFIX)], str(path))


def candidate_digests(store: Store, candidates: list[Candidate]) -> dict[str, str]:
    """name → weights digest of each candidate, its weights verified (see ref_weights_digest) and
    checked for what they hold (missing or unexpected tensors, NaN: check_weights), before Ray."""
    digests = {}
    for cand in candidates:
        ref = model_ref(store, cand)
        digests[cand.name] = ref_weights_digest(ref)
        check_weights(readable_dir(ref), f"candidate {cand.name}")
    return digests


def readable_dir(ref: ModelRef) -> Path:
    """The reference's model files on this machine: in place in a local store, else fetched (cached)."""
    if isinstance(ref, StoreRef) and (path := Store.open(ref.store).local_path(ref.key)) is not None:
        return path
    return model_dir(ref)


def model_dir(ref: ModelRef) -> Path:
    """The model files of a reference on this node (store trees without optimizer shards or RNG state)."""
    if isinstance(ref, StoreRef):
        return fetch_tree_cached(Store.open(ref.store), ref.key, include=is_model_file)
    return ref.materialize()


def _file_sha(path: str | None) -> str | None:
    file = resolve_path(path) if path else None
    return hashlib.sha256(file.read_bytes()).hexdigest() if file and file.is_file() else None


def settings_digest(sweep: SweepSpec) -> str:
    # The scoring rules are part of what a cached score means: scores made under an earlier rule (one
    # that passed "-18.0" for "0") are not served as this rule's.
    from slm.eval import bench, drift

    files = {"bench_sha256": _file_sha(sweep.bench)}
    files |= {f"{k}_sha256": _file_sha(getattr(sweep, k)) for k in ("heldout", "drift") if getattr(sweep, k)}
    rules = {"bench_rules_sha256": hashlib.sha256(Path(bench.__file__).read_bytes()).hexdigest()}
    if sweep.drift:
        rules["drift_rules_sha256"] = hashlib.sha256(Path(drift.__file__).read_bytes()).hexdigest()
    return config_digest(
        sweep.model_dump(
            mode="json", exclude={"mmlu_dir", "batch_size", "score_precursor", "heldout", "drift", "runs", "reference"}
        ),
        files | rules,
    )


def check_inputs(sweep: SweepSpec) -> None:
    """The bench, the held-out bench and the drift set read and checked now, before any training or
    scoring (a scoring task would fail on them only after MMLU)."""
    from slm.eval import bench, drift

    for key in ("bench", "heldout"):
        if getattr(sweep, key):
            file = resolve_path(getattr(sweep, key))
            if not file.is_file():
                raise UserError(f"sweep.{key}: bench file not found: {file}")
            bench.load_bench(file)
    if sweep.drift:
        file = resolve_path(sweep.drift)
        if not file.is_file():
            raise UserError(f"sweep.drift: drift prompts not found: {file}")
        drift.load_drift(file)


def quiet_libraries() -> None:
    """Per-request warnings and progress bars of lm-eval/transformers drown the sweep's own lines."""
    import logging

    from transformers.utils import logging as hf_logging

    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def run_extra_tasks(lm, spec: SweepSpec) -> dict:
    """Any lm-eval tasks by name; their hub datasets served from local directories when configured."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    check_tasks(spec.extra_tasks, spec.local_datasets)
    with served_from(spec.local_datasets):
        results = simple_evaluate(
            model=lm,
            tasks=spec.extra_tasks,
            num_fewshot=spec.extra_num_fewshot,
            limit=spec.limit,
            task_manager=TaskManager(include_path=str(LOCAL_TASKS)),
            random_seed=0,
            numpy_random_seed=0,
            torch_random_seed=0,
            fewshot_random_seed=1234,
        )
    return {
        task: {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        for task, metrics in results["results"].items()
    }


def load_for_scoring(ref: ModelRef, use_gpu: bool, cpus: int = 1):
    """(directory, model in eval mode, tokenizer, device) of a reference, as every scoring task loads it."""
    import torch

    if not use_gpu:
        torch.set_num_threads(cpus)  # as many threads as the task holds CPUs (one, but for a lone first task)
    path = model_dir(ref)
    device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
    model = load_model(path, dtype=torch.bfloat16 if device == "cuda" else torch.float32).to(device)
    model.eval()
    return path, model, load_tokenizer(path), device


def get_task(ref):
    """ray.get, with a UserError raised inside the task re-raised as itself (one line, no traceback)."""
    import ray

    try:
        return ray.get(ref)
    except Exception as exc:
        user_error = find_user_error(exc)
        if user_error is not None:
            raise user_error from None
        raise


def score_model(
    ref: ModelRef, sweep: dict, use_gpu: bool = False, drift_refs: dict[str, str] | None = None, cpus: int = 1
) -> dict:
    """Load a model (a store tree or any resolved reference) and score it. Runs inside a Ray task.
    `drift_refs`: the reference model's drift replies (None: this model is the reference).
    `cpus`: the CPUs the task holds (its torch threads on a CPU node)."""

    import torch

    from slm.eval.lm import ReusableHFLM

    started = time.perf_counter()
    quiet_libraries()
    spec = SweepSpec.model_validate(sweep)
    path, model, tokenizer, device = load_for_scoring(ref, use_gpu, cpus)
    lm = ReusableHFLM(
        pretrained=model,
        tokenizer=tokenizer,
        batch_size=spec.batch_size,
        device=device,
        tokenizer_dir=path,
        progress_bars=False,
    )
    subjects = mmlu.select_subjects(spec.subjects)
    with tempfile.TemporaryDirectory() as tmp:
        source = spec.mmlu_dir if mmlu.is_hub(spec.mmlu_dir) else resolve_path(spec.mmlu_dir)
        # lm-eval's request cache always builds every item; with a limit, building is cheap anyway.
        mmlu_scores = mmlu.evaluate(
            lm,
            source,
            subjects,
            Path(tmp) / "tasks",
            limit=spec.limit,
            num_fewshot=spec.num_fewshot,
            cache_requests=spec.limit is None,
            dev=spec.mmlu_dev,
        )
    lm.save_encodings()
    benches = {}
    for key in ("bench", "heldout"):
        if getattr(spec, key):
            benches[key] = bench.run_bench(
                model,
                tokenizer,
                bench.load_bench(resolve_path(getattr(spec, key))),
                spec.bench_max_new_tokens,
                spec.batch_size,
                spec.prompt_template,
            )
    if spec.drift:
        from slm.eval import drift

        prompts = drift.load_drift(resolve_path(spec.drift))
        benches["drift"] = drift.run_drift(
            model, tokenizer, prompts, spec.bench_max_new_tokens, spec.batch_size, spec.prompt_template, drift_refs
        )
    extra = run_extra_tasks(lm, spec) if spec.extra_tasks else {}
    return {
        "mmlu": mmlu_scores,
        "bench": benches.get("bench"),
        **{k: benches[k] for k in ("heldout", "drift") if k in benches},
        "extra": extra,
        "scored_at": now(),
        "device": device,
        "seconds": round(time.perf_counter() - started, 1),
        "threads": None if device == "cuda" else torch.get_num_threads(),
        "node": _node_address(),
    }


def _node_address() -> str | None:
    import ray

    return ray.util.get_node_ip_address() if ray.is_initialized() else None


def sweep(
    store: Store,
    candidates: list[Candidate],
    spec: SweepSpec,
    out_prefix: str,
    use_gpu: bool = False,
    tag: str = "sweep",
    digests: dict[str, str] | None = None,
    reference: Candidate | str | None = None,
) -> dict[str, Candidate]:
    """Score candidates; returns name → candidate with `scores` attached (each also in `out_prefix`).
    `digests`: name → weights digest already computed (candidate_digests, before Ray started).
    `reference`: the model the candidates are judged against, by name among them or as a candidate of
    its own (None: the stage's input model, if one is among them); with `sweep.drift`, its greedy
    drift replies are made first: the references every candidate is teacher-forced on."""
    if isinstance(reference, str):
        reference = next(c for c in candidates if c.name == reference)
    elif reference is None:
        reference = next((c for c in candidates if c.kind == "precursor"), None)
    digests = digests if digests is not None else candidate_digests(store, candidates)
    settings = settings_digest(spec)
    drift_refs = None
    if spec.drift and reference is not None:  # every candidate, the reference too, on the reference's replies
        digest = digests.get(reference.name) or ref_weights_digest(model_ref(store, reference))
        drift_refs = drift_references(store, reference, spec, settings, digest, use_gpu, tag)
    results = _score(store, candidates, spec, settings, digests, use_gpu, tag, drift_refs)
    for name, cand in results.items():
        store.write_json(layout.candidate_file(out_prefix, name), cand.to_json())
    return {c.name: results[c.name] for c in candidates}


def drift_replies(ref: ModelRef, sweep: dict, use_gpu: bool = False) -> dict[str, str]:
    """The greedy replies of a model to the drift set (a Ray task: a few seconds of generation)."""
    from slm.eval import drift
    from slm.eval.bench import greedy_answers

    spec = SweepSpec.model_validate(sweep)
    _, model, tokenizer, _ = load_for_scoring(ref, use_gpu)
    items = drift.load_drift(resolve_path(spec.drift))
    prompts = [it["prompt"] for it in items]
    answers = greedy_answers(
        model, tokenizer, prompts, spec.bench_max_new_tokens, spec.batch_size, spec.prompt_template
    )
    return {it["id"]: a for it, a in zip(items, answers)}


def drift_references(
    store: Store, cand: Candidate, spec: SweepSpec, settings: str, digest: str, use_gpu: bool, tag: str
) -> dict[str, str]:
    """The reference's drift replies, made once (cached by its weights) before the candidates are scored
    in parallel against them; the same greedy call as its own scoring, so they are its replies there too."""
    import ray

    key = layout.drift_references(digest, settings)
    if store.exists(key):
        return store.read_json(key)
    log(f"[{tag}] drift references: {cand.name}'s greedy replies to {spec.drift}")
    from slm.cluster import WORK_ENV

    task = ray.remote(drift_replies).options(
        num_cpus=1, num_gpus=1 if use_gpu else 0, max_retries=1, runtime_env={"env_vars": WORK_ENV}
    )
    replies = get_task(task.remote(model_ref(store, cand), spec.model_dump(mode="json"), use_gpu))
    store.write_json(key, replies)
    return replies


def _score(
    store: Store,
    candidates: list[Candidate],
    spec: SweepSpec,
    settings: str,
    digests: dict[str, str],
    use_gpu: bool,
    tag: str,
    drift_refs: dict[str, str] | None,
) -> dict[str, Candidate]:
    """Score (or read from the cache) each candidate in its own Ray task, reporting each as it ends."""
    import ray

    from slm.eval.drift import references_digest
    from slm.eval.lm import request_cache_dir

    results, pending = {}, {}
    # Requests depend on the data too: a cache directory per settings and data source.
    requests = request_cache_dir(
        config_digest(
            {
                "settings": settings,
                "source": str(resolve_path(spec.mmlu_dir)) if not spec.mmlu_dir.startswith("hf:") else spec.mmlu_dir,
            }
        )
    )
    from slm.cluster import WORK_ENV

    env = {"TQDM_DISABLE": "1", "LM_HARNESS_CACHE_PATH": str(requests), **WORK_ENV}

    def remote(cpus: int):
        return ray.remote(score_model).options(
            num_cpus=cpus, num_gpus=1 if use_gpu else 0, max_retries=1, runtime_env={"env_vars": env}
        )

    # scores against another model's drift replies are cached under those replies too
    cache_settings = settings if drift_refs is None else f"{settings}-{references_digest(drift_refs)}"
    for cand in candidates:
        digest = digests[cand.name]
        cache_key = layout.score_cache(digest, cache_settings)
        cand = cand.model_copy(update={"weights_digest": digest, "settings_digest": settings})
        if store.exists(cache_key):
            log(f"[{tag}] {cand.name}: cached scores ({digest})")
            results[cand.name] = cand.model_copy(update={"scores": load_record(store, cache_key, Scores)})
            continue
        pending[cand.name] = (cand, cache_key)
    if pending:
        mmlu_scope = "all subjects" if spec.subjects == "all" else f"{len(spec.subjects)} subjects"
        limit = f", {spec.limit} items each" if spec.limit else ""
        also = [k for k in ("bench", "heldout", "drift") if getattr(spec, k)] + spec.extra_tasks
        log(
            f"[{tag}] scoring {len(pending)} candidate(s): MMLU {mmlu_scope}{limit}, {spec.num_fewshot}-shot"
            f"{''.join(', ' + a for a in also)}"
        )
    refs, started = {}, time.perf_counter()
    # With a cold request cache the first candidate is scored alone (it fills the cache; the rest reuse it
    # in parallel); on CPU it then takes every CPU of the node rather than leaving all but one idle.
    alone = len(pending) > 1 and spec.limit is None and not requests.exists()
    for i, (name, (cand, _)) in enumerate(pending.items()):
        cpus = 1 if use_gpu or not (alone and i == 0) else lone_task_cpus()
        refs[name] = remote(cpus).remote(
            model_ref(store, cand), spec.model_dump(mode="json"), use_gpu, drift_refs, cpus
        )
        if alone and i == 0:
            ray.wait([refs[name]])
    names_of = {ref: name for name, ref in refs.items()}
    waiting = list(refs.values())
    while waiting:  # report each candidate as it finishes (k/N, ETA), not in submission order
        (ref,), waiting = ray.wait(waiting, num_returns=1)
        name = names_of[ref]
        cand, cache_key = pending[name]
        scores = Scores.model_validate(get_task(ref))
        store.write_json(cache_key, scores.to_json())
        done, elapsed = len(refs) - len(waiting), time.perf_counter() - started
        eta = f", about {elapsed / done * len(waiting):.0f} s left" if waiting else ""
        on = f" on {scores.threads} CPU threads" if (scores.threads or 1) > 1 else ""
        log(f"[{tag}] {done}/{len(refs)} {name}: {score_line(scores)}, scored in {scores.seconds:.0f} s{on}{eta}")
        results[name] = cand.model_copy(update={"scores": scores})
    return results


def lone_task_cpus() -> int:
    """The CPUs one task can hold on a node of this cluster (the smallest node's, at least 1)."""
    import ray

    per_node = [n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")]
    return max(1, int(min(per_node, default=1)))


def score_line(scores: Scores) -> str:
    m = scores.mmlu
    line = f"MMLU {m.acc:.2%} ± {m.se:.2%} (n={m.n})"
    if m.dev:
        line += f", dev {m.dev.acc:.2%} (n={m.dev.n})"
    for label, b in (("bench", scores.bench), ("held-out", scores.heldout)):
        if b:
            line += f", {label} {b.passed}/{b.total}"
    if scores.drift:
        mean = sum(scores.drift.logprob.values()) / max(len(scores.drift.logprob), 1)
        line += f", drift log-lik {mean:.3f}/token ({'own replies' if scores.drift.own else 'reference replies'})"
    return line
