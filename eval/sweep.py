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


def settings_digest(sweep: SweepSpec) -> str:
    bench_file = resolve_path(sweep.bench) if sweep.bench else None
    bench_sha = hashlib.sha256(bench_file.read_bytes()).hexdigest() if bench_file and bench_file.is_file() else None
    # The scoring rules are part of what a cached score means: scores made under an earlier rule (one
    # that passed "-18.0" for "0") are not served as this rule's.
    from slm.eval import bench

    rules_sha = hashlib.sha256(Path(bench.__file__).read_bytes()).hexdigest()
    return config_digest(
        sweep.model_dump(mode="json", exclude={"mmlu_dir", "batch_size", "score_precursor"}),
        {"bench_sha256": bench_sha, "bench_rules_sha256": rules_sha},
    )


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


def score_model(ref: ModelRef, sweep: dict, use_gpu: bool = False) -> dict:
    """Load a model (a store tree or any resolved reference) and score it. Runs inside a Ray task."""
    import torch

    from slm.eval.lm import ReusableHFLM

    started = time.perf_counter()
    quiet_libraries()
    spec = SweepSpec.model_validate(sweep)
    if not use_gpu:
        torch.set_num_threads(1)  # each sweep task holds one CPU
    path = model_dir(ref)
    tokenizer = load_tokenizer(path)
    device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
    model = load_model(path, dtype=torch.bfloat16 if device == "cuda" else torch.float32).to(device)
    model.eval()
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
        )
    lm.save_encodings()
    bench_scores = None
    if spec.bench:
        bench_scores = bench.run_bench(
            model,
            tokenizer,
            bench.load_bench(resolve_path(spec.bench)),
            spec.bench_max_new_tokens,
            spec.batch_size,
            spec.prompt_template,
        )
    extra = run_extra_tasks(lm, spec) if spec.extra_tasks else {}
    return {
        "mmlu": mmlu_scores,
        "bench": bench_scores,
        "extra": extra,
        "scored_at": now(),
        "device": device,
        "seconds": round(time.perf_counter() - started, 1),
    }


def sweep(
    store: Store,
    candidates: list[Candidate],
    spec: SweepSpec,
    out_prefix: str,
    use_gpu: bool = False,
    tag: str = "sweep",
    digests: dict[str, str] | None = None,
) -> dict[str, Candidate]:
    """Score candidates; returns name → candidate with `scores` attached (each also in `out_prefix`).
    `digests`: name → weights digest already computed (candidate_digests, before Ray started)."""
    import ray

    from slm.eval.lm import request_cache_dir

    settings = settings_digest(spec)
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
    env = {"TQDM_DISABLE": "1", "LM_HARNESS_CACHE_PATH": str(requests)}
    remote = ray.remote(score_model).options(
        num_cpus=1, num_gpus=1 if use_gpu else 0, max_retries=1, runtime_env={"env_vars": env}
    )
    digests = digests if digests is not None else candidate_digests(store, candidates)
    for cand in candidates:
        digest = digests[cand.name]
        cache_key = layout.score_cache(digest, settings)
        cand = cand.model_copy(update={"weights_digest": digest, "settings_digest": settings})
        if store.exists(cache_key):
            log(f"[{tag}] {cand.name}: cached scores ({digest})")
            results[cand.name] = cand.model_copy(update={"scores": load_record(store, cache_key, Scores)})
            continue
        pending[cand.name] = (cand, cache_key)
    if pending:
        mmlu_scope = "all subjects" if spec.subjects == "all" else f"{len(spec.subjects)} subjects"
        limit = f", {spec.limit} items each" if spec.limit else ""
        log(
            f"[{tag}] scoring {len(pending)} candidate(s): MMLU {mmlu_scope}{limit}, {spec.num_fewshot}-shot"
            f"{', bench' if spec.bench else ''}{', ' + ', '.join(spec.extra_tasks) if spec.extra_tasks else ''}"
        )
    refs = {}
    for i, (name, (cand, _)) in enumerate(pending.items()):
        refs[name] = remote.remote(model_ref(store, cand), spec.model_dump(mode="json"), use_gpu)
        if i == 0 and len(pending) > 1 and spec.limit is None and not requests.exists():
            ray.wait([refs[name]])  # the first checkpoint fills the request cache; the rest reuse it in parallel
    started, names_of = time.perf_counter(), {ref: name for name, ref in refs.items()}
    waiting = list(refs.values())
    while waiting:  # report each candidate as it finishes (k/N, ETA), not in submission order
        (ref,), waiting = ray.wait(waiting, num_returns=1)
        name = names_of[ref]
        cand, cache_key = pending[name]
        try:
            scores = Scores.model_validate(ray.get(ref))
        except Exception as exc:
            user_error = find_user_error(exc)
            if user_error is not None:
                raise user_error from None
            raise
        store.write_json(cache_key, scores.to_json())
        m, b = scores.mmlu, scores.bench
        bench_note = f", bench {b.passed}/{b.total}" if b else ""
        done, elapsed = len(refs) - len(waiting), time.perf_counter() - started
        eta = f", about {elapsed / done * len(waiting):.0f} s left" if waiting else ""
        log(
            f"[{tag}] {done}/{len(refs)} {name}: MMLU {m.acc:.2%} ± {m.se:.2%} (n={m.n}){bench_note}, "
            f"scored in {scores.seconds:.0f} s{eta}"
        )
        results[name] = cand.model_copy(update={"scores": scores})
    for name, cand in results.items():
        store.write_json(layout.candidate_file(out_prefix, name), cand.to_json())
    return results
