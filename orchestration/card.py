"""Model cards generated from run records: never hand-written.

The card of a champion walks its lineage (each champion.json names its precursor) and renders,
from the records alone: the model's shape, its benchmark tables, every stage in order with its data
and settings, the sweep table with the selection reasons, and where everything lives in the store.
"""
from __future__ import annotations

from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.repocard_data import model_index_to_eval_results

from slm.eval.report import markdown_table, pct
from slm.eval.scores import Scores, Selection
from slm import layout
from slm.config import resolve_path
from slm.engine import optimizer_name
from slm.records import redact
from slm.store import Store

DOMAIN_TITLES = {"stem": "STEM", "humanities": "Humanities", "social_sciences": "Social sciences", "other": "Other"}


def lineage(store: Store, info: dict) -> list[dict]:
    """Champion infos from the first stage to this one."""
    chain = [info]
    while chain[0].get("precursor") and chain[0]["precursor"].get("key"):
        key = chain[0]["precursor"]["key"]
        if not store.exists(layout.champion_info(key)):
            break  # an external init (hub, local dir) ends the chain
        chain.insert(0, store.read_json(layout.champion_info(key)))
    return chain


def _overview(record: dict) -> str:
    arch = record.get("model", {})
    rows = [("Architecture", arch.get("architecture")), ("Parameters", f"{arch.get('parameters', 0):,}"),
            ("Hidden size", arch.get("hidden_size")), ("Layers", arch.get("layers")),
            ("Attention heads", arch.get("heads")), ("Vocab size", arch.get("vocab_size")),
            ("Context length", arch.get("context")), ("Tied embeddings", arch.get("tie_word_embeddings"))]
    return "| | |\n|---|---|\n" + "\n".join(f"| **{k}** | {v} |" for k, v in rows if v is not None)


def _commit(record: dict) -> str:
    commit = record.get("git_commit")
    return (f"git `{commit}`" if commit else
            "not recorded (the run was not started from a git checkout; the image records its GIT_COMMIT build arg)")


def _benchmarks(scores: Scores, sweep_note: str) -> str:
    mmlu, bench = scores.mmlu, scores.bench
    out = [f"### MMLU\n\n{sweep_note}\n", "| Split | Score |", "|---|---|",
           f"| **MMLU ({mmlu.n:,} items)** | **{pct(mmlu.acc)} ± {pct(mmlu.se)}** |", "",
           "| Macro domain | Items | Accuracy |", "|---|---|---|"]
    for d, v in sorted(mmlu.domains.items()):  # sorted: the same card however the scores were read
        out.append(f"| {DOMAIN_TITLES.get(d, d)} | {v.n} | {pct(v.acc)} |")
    if bench is None:
        return "\n".join(out)
    out += ["", "### TRUTH-list bench", "",
            "Greedy answers; a prompt passes when the answer contains an accepted answer and no known-wrong anchor, "
            "and format items answer in the asked form.", "", "| Category | N | Score |", "|---|---|---|"]
    for cat, v in sorted(bench.categories.items()):
        out.append(f"| {cat} | {v.total} | {v.passed}/{v.total} ({v.score:.1%}) |")
    out.append(f"| **TOTAL** | **{bench.total}** | **{bench.passed}/{bench.total} ({bench.score:.1%})** |")
    return "\n".join(out)


def _selection_policy(sel, info: dict) -> str:
    policy = sel.policy or {}
    merged = " and its SLERP merges with the input model" if any(r.kind == "merge" for r in sel.candidates) else ""
    text = (f"Every checkpoint of the run{merged} was scored, with the stage's input model as the baseline. "
            f"Policy: best MMLU; a leader whose gain over the runner-up is below {policy.get('margin', 0):.2%} may "
            f"not regress on {', '.join(policy.get('guarded_domains') or []) or 'any guarded domain'} by more than "
            f"{policy.get('regression_tolerance_se', 1):g} SE")
    if policy.get("bench_guard"):
        text += (", and one that passes significantly fewer bench prompts (overall or in a category) than the "
                 "runner-up is rejected unless its MMLU lead is significant too")
    gate = policy.get("gate") or {}
    if gate.get("enabled"):
        text += (f". Gate: promoted only when not significantly worse than the input model on MMLU, the bench"
                 f"{' and each bench category' if gate.get('bench_categories') else ''} (paired exact McNemar, "
                 f"α = {gate.get('alpha')})")
    text += "."
    if info.get("manual"):
        text += (f"\n\n> Promoted by hand, overruling {info['manual']['overrules']}: {info['manual']['reason']}")
    return text


def _stage_section(index: int, champ: dict, record: dict) -> str:
    cfg, train, data = record["config"], record["config"]["train"], record["data"]
    eng, summary = record.get("engine", {}), record.get("training", {})
    optimizer = record["deepspeed"].get("optimizer") or optimizer_name(record["deepspeed"]["config"], train.get("optim"))
    world = eng.get("world_size") or 1
    init = record["init"]
    started = f"`{init['spec']}`" + (f" ({init['champion']['line']}@{init['champion']['version']})"
                                     if init.get("champion") else "")
    lines = [f"### Stage {index} — {champ['stage']} ({champ['line']}@{champ['version']})", "",
             cfg.get("description", ""), "",
             "| Item | Value |", "|---|---|",
             f"| Started from | {started} |",
             f"| Objective | {cfg['objective']} |",
             f"| Dataset | `{cfg['data']['dataset']}` ({data['builder']} v{data['builder_version']}, "
             f"{data['splits']['train']['rows']:,} train rows) |",
             f"| Engine | {eng.get('engine')} · ZeRO stage {eng.get('zero_stage')} · {world} workers "
             f"({eng.get('backend')}) · DeepSpeed {eng.get('deepspeed')} |",
             f"| Optimizer / schedule | {optimizer}, lr {train['lr']:g}, {train['schedule']} with {train['warmup_steps']} "
             f"warm-up steps, weight decay {train['weight_decay']:g} |",
             f"| Batch | {train['micro_batch']} × {train['grad_accum']} accumulation × {world} workers = "
             f"{train['micro_batch'] * train['grad_accum'] * world} sequences/step, max length {cfg['data']['max_length']} |",
             f"| Steps | {eng.get('global_step')} (save every {train['save_steps']}), precision {train['precision']}, "
             f"seed {train['seed']} |",
             f"| Loss | {summary.get('first_loss', float('nan')):.4f} → {summary.get('last_loss', float('nan')):.4f} |",
             f"| Throughput | {summary.get('tokens_per_s', 0):,.0f} tokens/s, {eng.get('tokens_seen', 0):,} tokens |"]
    if cfg.get("lora"):
        lo = cfg["lora"]
        lines.append(f"| LoRA | r {lo['r']}, alpha {lo['alpha']:g}, dropout {lo['dropout']:g}, targets "
                     f"{lo['target_modules'] if isinstance(lo['target_modules'], str) else ', '.join(lo['target_modules'])}; "
                     f"{eng.get('trainable_parameters', 0):,} trainable parameters, merged into full weights |")
    if cfg.get("kl_anchor"):
        kl = cfg["kl_anchor"]
        lines.append(f"| KL anchor | KL(start ‖ trained) × {kl['coef']:g} from step {kl['start_step']}, "
                     f"{kl['warmup_steps']} warm-up steps, "
                     f"{'last ' + str(kl['last_k_tokens']) + ' supervised tokens' if kl['last_k_tokens'] else 'all supervised tokens'} |")
    if cfg.get("logit_distill"):
        ld = cfg["logit_distill"]
        lines.append(f"| Logit distillation | forward KL to `{ld['teacher']}` at T = {ld['temperature']:g}, "
                     f"weight {ld['alpha']:g} (cross-entropy {1 - ld['alpha']:g}) |")
    pad = record.get("pad")
    if pad:
        cell = lambda text: str(text).replace("|", "\\|")  # noqa: E731  (GFM tables split on | even in code)
        lines.append(f"| Pad token | `{cell(pad['content'])}` (id {pad['id']}), {pad['how']}: {cell(pad['reason'])} |")
    storage = record.get("storage")
    if storage:
        kept = ", ".join(k.rsplit("/", 1)[-1] for k in storage["resumable_checkpoints"]) or "none"
        lines.append(f"| Checkpoints stored | {len(record.get('checkpoints', []))} with weights; optimizer state kept in "
                     f"{kept} (keep_optimizer_states={storage['keep_optimizer_states']}), pruned from "
                     f"{len(storage['pruned'])} ({storage['bytes_freed'] / 1e6:,.0f} MB freed) |")
    resumes = [s for s in record.get("worker_group_starts", []) if s.get("resume_from")]
    if resumes:
        lines.append(f"| Interruptions | resumed {len(resumes)} time(s) from the newest complete checkpoint: "
                     + ", ".join(f"{r['resume_from'].rsplit('/', 1)[-1]} (attempt {r['attempt']})" for r in resumes) + " |")
    if data.get("sources"):
        lines += ["", "| Source | Weight | Rows / tokens |", "|---|---|---|"]
        for s in data["sources"]:
            size = s.get("tokens") or s.get("rows_out") or s.get("answered") or s.get("rows_in")
            lines.append(f"| {s.get('name')} | {s.get('weight', '—')} | {size:,} |")
    for warning in record.get("warnings", []):
        lines += ["", f"> ⚠ {warning}"]
    if data.get("teacher"):
        lines += ["", f"Teacher: `{data['teacher']['spec']}`, {data['teacher']['decoding']} answers of at most "
                      f"{data['teacher']['max_new_tokens']} tokens."]
    return "\n".join(lines)


def _data_hygiene(chain: list[dict], records: list[dict]) -> str:
    """What dedup and decontamination dropped from each stage's data, per source and eval set."""
    rows = ["| Stage | Source | Rows read | Exact dups | Near dups | Contaminated (eval set: rows) | Kept |",
            "|---|---|---|---|---|---|---|"]
    unchecked = []
    for champ, record in zip(chain, records):
        hygiene = (record.get("data") or {}).get("hygiene")
        if not hygiene:
            unchecked.append(champ["stage"])
            continue
        if isinstance(hygiene.get("eval_sets"), str):
            unchecked.append(champ["stage"])
        for name, t in hygiene["sources"].items():
            leaked = ", ".join(f"{k}: {v}" for k, v in sorted(t["contaminated"].items())) or "0"
            rows.append(f"| {champ['stage']} | {name} | {t['rows_in']:,} | {t['exact_duplicates']:,} | "
                        f"{t['near_duplicates']:,} | {leaked} | {t['kept']:,} |")
    if len(rows) == 2 and not unchecked:
        return ""
    settings = next((r["data"]["hygiene"] for r in records if (r.get("data") or {}).get("hygiene")), None)
    intro = ""
    if settings:
        s = settings["settings"]
        evals = settings["eval_sets"]
        against = (", ".join(f"{k} ({v:,} items)" for k, v in evals["items"].items())
                   if isinstance(evals, dict) else "no evaluation sets")
        intro = (f"Rows were deduplicated (exact, after normalising; near, MinHash LSH at Jaccard ≥ "
                 f"{s['near_threshold']} on {s['shingle_words']}-word shingles) and checked against every evaluation "
                 f"the sweep runs by {s['ngram']}-gram overlap (shorter items matched whole): {against}.\n\n")
    note = (f"\n\nNot checked (built before decontamination existed, or without evaluation sets): "
            f"{', '.join(unchecked)}." if unchecked else "")
    return "## Data hygiene\n\n" + intro + "\n".join(rows) + note + "\n\n"


def _rollbacks(store: Store, line: str) -> str:
    """Deliberate moves of the line's `latest` back to an older version: who, when, why."""
    names = [n for n in store.children(layout.line_history(line)) if n.endswith("-rollback.json")]
    if not names:
        return ""
    rows = ["## Rollbacks of this line", "", "| When | From | To | By | Reason |", "|---|---|---|---|---|"]
    for n in names:
        e = store.read_json(f"{layout.line_history(line)}/{n}")
        rows.append(f"| {e['at']} | {e['from']} | {e['to']} | {e['by']} | {e['reason']} |")
    return "\n".join(rows) + "\n\n"


def _experiments(store: Store, line: str) -> str:
    """Every experiment tried on this line, rejected ones included: the card keeps the negative results."""
    names = [n for n in store.children(layout.experiments_dir(line)) if n.endswith(".json")]
    if not names:
        return ""
    rows = ["| Experiment | Stage | Hypothesis | Status | MMLU (experiment vs incumbent) | Reason |",
            "|---|---|---|---|---|---|"]
    for n in names:
        e = store.read_json(f"{layout.experiments_dir(line)}/{n}")
        m = e["mmlu"]
        rows.append(f"| {e['name']} | {e['stage']} | {e.get('hypothesis') or '—'} | **{e['status']}** | "
                    f"{pct(m['candidate'])} vs {pct(m['incumbent'])} | {e['reason']} |")
    intro = "Runs tried against the current champion of their stage; rejected ones were not promoted."
    return "\n".join(["## Experiments", "", intro, "", *rows, ""])


def eval_results(info: dict) -> list[EvalResult]:
    """The model-index: every benchmark the champion was scored on, as the Hub reads it.

    MMLU scored on a subset says so in its name, so that nothing takes it for full MMLU."""
    scores = Scores.model_validate(info["scores"])
    mmlu, bench = scores.mmlu, scores.bench
    subset = "subset" in info["sweep_note"]
    out = [EvalResult(task_type="text-generation", dataset_type="cais/mmlu",
                      dataset_name=f"MMLU (subset: {mmlu.n:,} items, not full MMLU)" if subset else "MMLU",
                      dataset_config="all", dataset_split="test", metric_type="accuracy",
                      metric_value=round(mmlu.acc, 4), metric_name="accuracy")]
    if bench:
        out.append(EvalResult(task_type="text-generation", dataset_type="truth-list-bench",
                              dataset_name=f"TRUTH-list bench ({bench.total} prompts)", metric_type="pass_rate",
                              metric_value=round(bench.score, 4), metric_name="pass rate"))
    for task, metrics in sorted(scores.extra.items()):
        for metric, value in sorted(metrics.items()):
            if "stderr" not in metric:
                out.append(EvalResult(task_type="text-generation", dataset_type=task, dataset_name=task,
                                      metric_type=metric.split(",")[0], metric_value=round(value, 4),
                                      metric_name=metric))
    return out


def validated(text: str, expected: list[EvalResult]) -> str:
    """Parse the card back with huggingface_hub, as the Hub does, and check the model-index survived."""
    parsed = ModelCard(text).data
    _, results = model_index_to_eval_results(parsed.to_dict()["model-index"])
    if [(r.dataset_type, r.metric_value) for r in results] != [(r.dataset_type, r.metric_value) for r in expected]:
        raise ValueError("model card metadata did not survive huggingface_hub's parser")
    return text


PLOT_CAPTIONS = {"history": "The line so far: MMLU and bench score of every champion up to this one",
                 "loss": "Training loss of this champion's run", "selection": "The checkpoint sweep that chose it"}


def _plots(info: dict) -> str:
    """The plots promotion copied into the champion (plots/*.png), linked relative to the card."""
    plots = info.get("plots") or {}
    return "".join(f"\n**{PLOT_CAPTIONS[name]}**\n\n![{name}]({path})\n" for name, path in plots.items())


def base_card(spec: str):
    """The card metadata of the model a line grew from, where it can be read offline: a local model
    directory's README.md (launch/convert_gguf.py writes one), or a hub model's card in the HF cache."""
    from huggingface_hub import ModelCard, try_to_load_from_cache

    if spec.startswith("hf:"):
        repo, _, revision = spec[len("hf:"):].partition("@")
        found = try_to_load_from_cache(repo, "README.md", revision=revision or None)
        path = Path(found) if isinstance(found, str) else None
    elif spec and ":" not in spec.split("/")[0]:
        path = resolve_path(spec) / "README.md"
    else:
        path = None
    return ModelCard.load(path).data if path and path.is_file() else None


def hub_base(chain: list[dict]) -> dict:
    """base_model (and its relation) when the line grew from a hub model, so the Hub's model tree shows
    it: named by an `hf:` init, or by the base_model of a local init's own card."""
    spec = ((chain[0].get("precursor") or {}).get("spec") or "")
    if spec.startswith("hf:"):
        repo = spec[len("hf:"):].partition("@")[0]
    else:
        base = base_card(spec) if spec else None
        repo = base.base_model if base else None
    if not repo:
        return {}
    merged = chain[0].get("candidate_kind") == "merge"  # the first champion is a SLERP with the base itself
    return {"base_model": repo, "base_model_relation": "merge" if merged else "finetune"}


def card_license(chain: list[dict], configured: str | None) -> tuple[str, str]:
    """(licence, where it came from): card.license if set, else the base model's, else apache-2.0 for a
    line trained from scratch. A base whose licence cannot be read gives `other`, said in the card."""
    if configured:
        return configured, "card.license in the pipeline config"
    spec = ((chain[0].get("precursor") or {}).get("spec") or "")
    if not spec:
        return "apache-2.0", "the project's default for weights trained from scratch"
    base = base_card(spec)
    if base and base.license:
        return base.license, f"the base model's card ({spec})"
    return "other", f"unknown: the base model ({spec}) has no readable card; set card.license"


def render(store: Store, info: dict, card_meta: dict) -> str:
    chain = lineage(store, info)
    records = [store.read_json(c["run_record"]) for c in chain]
    record = records[-1]
    scores = Scores.model_validate(info["scores"])
    name = f"{info['line']}-{info['version']}"
    license_, license_source = card_license(chain, card_meta.get("license"))
    data = ModelCardData(
        language=card_meta.get("language", ["en"]), license=license_,
        library_name="transformers", pipeline_tag="text-generation", model_name=name,
        tags=["text-generation", record["model"]["architecture"], "causal-lm", *[c["stage"] for c in chain]],
        eval_results=eval_results(info),
        **hub_base(chain),
    )
    sel = Selection.model_validate(store.read_json(info["selection"]))
    history = ["| Model | Stage | MMLU | Δ vs this model |", "|---|---|---|---|"]
    for c in chain:
        acc = c["scores"]["mmlu"]["acc"]
        delta = "— this model" if c is info else f"{acc - scores.mmlu.acc:+.2%}"
        history.append(f"| {c['line']}@{c['version']} | {c['stage']} | {pct(acc)} | {delta} |")
    stages = "\n\n".join(_stage_section(i, c, r) for i, (c, r) in enumerate(zip(chain, records), 1))
    versions = record.get("versions", {})
    prompt = record.get("chat_template_example", "")
    body = f"""
# {name}

> Champion of the **{info['line']}** line after the **{info['stage']}** stage: a
> {record['model']['parameters']:,}-parameter {record['model']['architecture']} decoder trained through
> {' → '.join(c['stage'] for c in chain)}. This card is generated from the run records.

## Model overview

{_overview(record)}

## Benchmark performance

{_benchmarks(scores, info['sweep_note'])}

### Improvement along the line

{chr(10).join(history)}
{_plots(info)}
## Training pipeline — chronological view

{stages}

{_data_hygiene(chain, records)}
## Checkpoint sweep and selection ({info['stage']})

{_selection_policy(sel, info)}

{markdown_table(sel)}

{_experiments(store, info['line'])}{_rollbacks(store, info['line'])}
## Recommended usage

Greedy decoding (`do_sample=False`). The prompt format is the tokenizer's chat template:

```
{prompt}
```

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained("path/to/{name}")
model = AutoModelForCausalLM.from_pretrained("path/to/{name}")
messages = [{{"role": "user", "content": "What is the capital of France?"}}]
inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
out = model.generate(**inputs, max_new_tokens=32, do_sample=False)
print(tokenizer.decode(out[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True))
```

## Reproducibility

| Item | Value |
|---|---|
| Store | `{redact(store.uri)}` |
| Champion | `{info['key']}` (weights digest `{info['weights_digest']}`) |
| Run records | {', '.join(f'`{c["run_record"]}`' for c in chain)} |
| Licence | {license_} ({license_source}) |
| Code | {_commit(record)} |
| Versions | torch {versions.get('torch')}, deepspeed {versions.get('deepspeed')}, ray {versions.get('ray')}, transformers {versions.get('transformers')}, lm-eval {versions.get('lm_eval')}, mergekit {versions.get('mergekit')} |
"""
    return validated(str(ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")), data.eval_results)
