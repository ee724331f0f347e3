"""MMLU through lm-eval, from the original CSV layout (`test/<subject>_test.csv`, `dev/<subject>_dev.csv`)
or from the Hugging Face dataset (`hf:cais/mmlu`, or a local directory laid out like it).

The tasks are plain lm-eval task YAMLs (`mmlu_csv_<subject>`, grouped into `mmlu_csv_<domain>` and
`mmlu_csv`), written with the same prompt, choices, few-shot split and size-weighted aggregation
as lm-eval's own `mmlu` group; only the data source differs. `eval/tasks/mmlu_csv/` holds them for
`lm_eval --include_path eval/tasks/mmlu_csv` (run from the project root); sweeps write a copy
pointing at the configured data directory.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import yaml

from slm.errors import UserError

# lm-eval's subject → macro-domain mapping (lm_eval/tasks/mmlu/_generate_configs.py).
SUBJECT_DOMAINS = {
    "abstract_algebra": "stem",
    "anatomy": "stem",
    "astronomy": "stem",
    "business_ethics": "other",
    "clinical_knowledge": "other",
    "college_biology": "stem",
    "college_chemistry": "stem",
    "college_computer_science": "stem",
    "college_mathematics": "stem",
    "college_medicine": "other",
    "college_physics": "stem",
    "computer_security": "stem",
    "conceptual_physics": "stem",
    "econometrics": "social_sciences",
    "electrical_engineering": "stem",
    "elementary_mathematics": "stem",
    "formal_logic": "humanities",
    "global_facts": "other",
    "high_school_biology": "stem",
    "high_school_chemistry": "stem",
    "high_school_computer_science": "stem",
    "high_school_european_history": "humanities",
    "high_school_geography": "social_sciences",
    "high_school_government_and_politics": "social_sciences",
    "high_school_macroeconomics": "social_sciences",
    "high_school_mathematics": "stem",
    "high_school_microeconomics": "social_sciences",
    "high_school_physics": "stem",
    "high_school_psychology": "social_sciences",
    "high_school_statistics": "stem",
    "high_school_us_history": "humanities",
    "high_school_world_history": "humanities",
    "human_aging": "other",
    "human_sexuality": "social_sciences",
    "international_law": "humanities",
    "jurisprudence": "humanities",
    "logical_fallacies": "humanities",
    "machine_learning": "stem",
    "management": "other",
    "marketing": "other",
    "medical_genetics": "other",
    "miscellaneous": "other",
    "moral_disputes": "humanities",
    "moral_scenarios": "humanities",
    "nutrition": "other",
    "philosophy": "humanities",
    "prehistory": "humanities",
    "professional_accounting": "other",
    "professional_law": "humanities",
    "professional_medicine": "other",
    "professional_psychology": "social_sciences",
    "public_relations": "social_sciences",
    "security_studies": "social_sciences",
    "sociology": "social_sciences",
    "us_foreign_policy": "social_sciences",
    "virology": "other",
    "world_religions": "humanities",
}
DOMAINS = ("stem", "humanities", "social_sciences", "other")
FULL_TEST_ITEMS = 14042
FULL_DEV_ITEMS = 285
GROUP = "mmlu_csv"
# The dev split (5 items a subject, the few-shot pool) scored as a row of its own, always 0-shot, in the
# same lm-eval call as the test split: the reference card's "MMLU dev (285 items)".
DEV_GROUP = "mmlu_csv_dev"

TEMPLATE = {
    "dataset_path": "csv",
    "test_split": "test",
    "fewshot_split": "dev",
    "fewshot_config": {"sampler": "first_n"},
    "output_type": "multiple_choice",
    "doc_to_text": "{{question.strip()}}\nA. {{A}}\nB. {{B}}\nC. {{C}}\nD. {{D}}\nAnswer:",
    "doc_to_choice": ["A", "B", "C", "D"],
    "doc_to_target": "{{['A', 'B', 'C', 'D'].index(answer.strip())}}",
    "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
    "metadata": {"version": 1.0},
}


HUB_TEMPLATE = {
    **TEMPLATE,
    "doc_to_text": "{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\n"
    "D. {{choices[3]}}\nAnswer:",
    "doc_to_target": "answer",
}


def is_hub(source) -> bool:
    return str(source).startswith("hf:")


def select_subjects(spec) -> list[str]:
    if spec == "all":
        return list(SUBJECT_DOMAINS)
    unknown = [s for s in spec if s not in SUBJECT_DOMAINS]
    if unknown:
        raise UserError(f"sweep.subjects: unknown MMLU subject(s) {', '.join(unknown)}")
    return list(spec)


def count_items(data_dir: Path, subjects: list[str], split: str = "test") -> dict[str, int]:
    counts = {}
    for subject in subjects:
        file = data_dir / split / f"{subject}_{split}.csv"
        if not file.is_file():
            raise UserError(f"MMLU data: {file} not found (sweep.mmlu_dir = {data_dir})")
        with open(file, newline="", encoding="utf-8") as f:
            counts[subject] = sum(1 for _ in csv.reader(f))
    return counts


def task_name(subject: str, dev: bool = False) -> str:
    return f"{DEV_GROUP if dev else GROUP}_{subject}"


def dev_task(spec: dict) -> dict:
    """A subject's test task, scoring its dev split instead (0-shot: the split is its own few-shot pool)."""
    subject = spec["task_alias"]
    return {**spec, "task": task_name(subject, dev=True), "task_alias": f"{subject} (dev)", "test_split": "dev"}


def subject_task(subject: str, source) -> dict:
    """One subject's task: the CSV layout in a directory, or `hf:<dataset>` (a hub id or a local
    directory laid out like the hub dataset) with lm-eval's own template."""
    spec = {
        "task": task_name(subject),
        "task_alias": subject,
        "description": f"The following are multiple choice questions (with answers) about "
        f"{subject.replace('_', ' ')}.\n\n",
    }
    if is_hub(source):
        return {**spec, **HUB_TEMPLATE, "dataset_path": str(source)[3:], "dataset_name": subject}
    data_dir = Path(source)
    return {
        **spec,
        **TEMPLATE,
        "dataset_kwargs": {
            "column_names": ["question", "A", "B", "C", "D", "answer"],
            "header": None,
            "data_files": {
                "test": str(data_dir / "test" / f"{subject}_test.csv"),
                "dev": str(data_dir / "dev" / f"{subject}_dev.csv"),
            },
        },
    }


def write_tasks(source, subjects: list[str], out_dir: Path, dev: bool = False) -> list[str]:
    """Write the subject, domain and top-level group YAMLs (and with `dev`, the dev split's tasks and
    their group); returns the top-level group names."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for subject in subjects:
        spec = subject_task(subject, source)
        for split, file in spec.get("dataset_kwargs", {}).get("data_files", {}).items():
            if not Path(file).is_file():
                raise UserError(
                    f"sweep.mmlu_dir {source}: no {split} file for {subject} ({file}); the repository "
                    f"ships 6 subjects in eval/data/mmlu: point mmlu_dir at a full MMLU copy or hf:cais/mmlu"
                )
        (out_dir / f"{task_name(subject)}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False, width=1000))
        if dev:
            text = yaml.safe_dump(dev_task(spec), sort_keys=False, width=1000)
            (out_dir / f"{task_name(subject, dev=True)}.yaml").write_text(text)
    if dev:
        group = {
            "group": DEV_GROUP,
            "task": [task_name(s, dev=True) for s in subjects],
            "aggregate_metric_list": [{"metric": "acc", "weight_by_size": True}],
            "metadata": {"version": 1},
        }
        (out_dir / f"_{DEV_GROUP}.yaml").write_text(yaml.safe_dump(group, sort_keys=False))
    domains = [d for d in DOMAINS if any(SUBJECT_DOMAINS[s] == d for s in subjects)]
    for domain in domains:
        group = {
            "group": f"{GROUP}_{domain}",
            "group_alias": domain,
            "task": [task_name(s) for s in subjects if SUBJECT_DOMAINS[s] == domain],
            "aggregate_metric_list": [{"metric": "acc", "weight_by_size": True}],
            "metadata": {"version": 2},
        }
        (out_dir / f"_{GROUP}_{domain}.yaml").write_text(yaml.safe_dump(group, sort_keys=False))
    top = {
        "group": GROUP,
        "task": [f"{GROUP}_{d}" for d in domains],
        "aggregate_metric_list": [{"metric": "acc", "weight_by_size": True}],
        "metadata": {"version": 2},
    }
    (out_dir / f"_{GROUP}.yaml").write_text(yaml.safe_dump(top, sort_keys=False))
    return [GROUP, DEV_GROUP] if dev else [GROUP]


def summarize(results: dict, subjects: list[str]) -> dict:
    """Overall, per-domain and per-subject accuracy with SEs, plus per-item correctness (by doc_id)."""
    res = results["results"]

    def entry(name):
        r = res[name]
        se = r.get("acc_stderr,none")
        return {"acc": float(r["acc,none"]), "se": float(se) if isinstance(se, (int, float)) else None}

    per_subject, items, probs = {}, {}, {}
    for subject in subjects:
        name = task_name(subject)
        samples = sorted(results["samples"][name], key=lambda s: s["doc_id"])
        per_subject[subject] = {**entry(name), "n": len(samples), "domain": SUBJECT_DOMAINS[subject]}
        items[subject] = [int(s["acc"]) for s in samples]
        probs[subject] = [correct_choice_probability(s) for s in samples]
    domains = {}
    for d in DOMAINS:
        if f"{GROUP}_{d}" in res:
            n = sum(v["n"] for v in per_subject.values() if v["domain"] == d)
            domains[d] = {**entry(f"{GROUP}_{d}"), "n": n}
    n_total = sum(v["n"] for v in per_subject.values())
    overall = with_se(entry(GROUP), n_total)
    summary = {
        "acc": overall["acc"],
        "se": overall["se"],
        "n": n_total,
        "domains": domains,
        "subjects": per_subject,
        "items": items,
        "probs": probs,
    }
    if DEV_GROUP in res:
        n_dev = sum(len(results["samples"][task_name(s, dev=True)]) for s in subjects)
        summary["dev"] = {**with_se(entry(DEV_GROUP), n_dev), "n": n_dev}
    return summary


def with_se(score: dict, n: int) -> dict:
    """The binomial SE where lm-eval reports none for a group."""
    if score["se"] is None:
        return {**score, "se": math.sqrt(score["acc"] * (1 - score["acc"]) / max(n, 1))}
    return score


def correct_choice_probability(sample: dict) -> float:
    """The probability of the correct choice normalised over the four, from the log-likelihoods
    lm-eval computed for its acc (acc is whether this choice has the largest of them)."""
    lls = [float(r[0] if isinstance(r, (list, tuple)) else r) for r in sample["filtered_resps"]]
    top = max(lls)
    weights = [math.exp(x - top) for x in lls]
    return weights[int(sample["target"])] / sum(weights)


# Loaded task objects (datasets read, prompts configured) per process, reused for every checkpoint a
# sweep worker scores: loading 57 subjects' data is most of lm-eval's per-run overhead.
_LOADED: dict[str, dict] = {}


def load_tasks(source, subjects: list[str], task_dir: Path, num_fewshot: int, dev: bool = False) -> dict:
    """lm-eval's task dict for our group, set up as `simple_evaluate` does (few-shot count and seed)."""
    from lm_eval.tasks import TaskManager

    key = json.dumps([str(source), subjects, num_fewshot, dev, TEMPLATE, HUB_TEMPLATE], sort_keys=True)
    if key not in _LOADED:
        groups = write_tasks(source, subjects, task_dir, dev)
        loaded = TaskManager(include_path=str(task_dir), include_defaults=False).load(groups)
        for name, task in loaded["tasks"].items():
            task.set_config(key="num_fewshot", value=0 if name.startswith(DEV_GROUP) else num_fewshot)
        _LOADED[key] = loaded
    for task in _LOADED[key]["tasks"].values():
        task.set_fewshot_seed(seed=1234)
    return _LOADED[key]


def evaluate(
    lm,
    source,
    subjects: list[str],
    task_dir: Path,
    limit: int | None = None,
    num_fewshot: int = 0,
    cache_requests: bool = False,
    dev: bool = False,
) -> dict:
    """source: a directory in the CSV layout, or `hf:<dataset>`. With cache_requests, lm-eval keeps the
    built requests (under LM_HARNESS_CACHE_PATH) for the next model with the same tokenizer name.
    dev: the dev split scored too, 0-shot, as the summary's `dev` row."""
    import random

    import numpy as np
    import torch
    from lm_eval.evaluator import evaluate as lm_eval_evaluate

    if not is_hub(source):
        count_items(Path(source), subjects)  # fail fast on a wrong directory
    task_dict = load_tasks(source, subjects, task_dir, num_fewshot, dev)
    random.seed(0), np.random.seed(0), torch.manual_seed(0)  # simple_evaluate's seeds
    results = lm_eval_evaluate(lm=lm, task_dict=task_dict, limit=limit, cache_requests=cache_requests, log_samples=True)
    return summarize(results, subjects)


def main(argv=None) -> None:
    """Write the task YAMLs for a data directory: python -m eval.mmlu --data-dir DIR --out DIR."""
    import argparse

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--data-dir", default="../shared/data/mmlu", help="MMLU in the original CSV layout, or hf:cais/mmlu")
    p.add_argument("--out", default="eval/tasks/mmlu_csv")
    p.add_argument("--subjects", nargs="*", default=None)
    args = p.parse_args(argv)
    source = args.data_dir if is_hub(args.data_dir) else Path(args.data_dir)
    write_tasks(source, args.subjects or list(SUBJECT_DOMAINS), Path(args.out))
    print(
        f"wrote lm-eval tasks for {len(args.subjects or SUBJECT_DOMAINS)} subjects to {args.out}; "
        f"run: lm_eval --include_path {args.out} --tasks {GROUP} ..."
    )


def write_hub_layout(csv_dir: Path, out_dir: Path, subjects: list[str]) -> Path:
    """Lay the CSVs out as the `cais/mmlu` hub dataset (Parquet per subject and split, configs in
    README.md), so that lm-eval's built-in `mmlu_*` tasks read them offline from a local directory."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    configs = []
    for subject in subjects:
        files = []
        for split in ("test", "dev", "val"):
            with open(csv_dir / split / f"{subject}_{split}.csv", newline="", encoding="utf-8") as f:
                rows = [
                    {"question": q, "subject": subject, "choices": [a, b, c, d], "answer": "ABCD".index(ans.strip())}
                    for q, a, b, c, d, ans in csv.reader(f)
                ]
            name = "validation" if split == "val" else split
            path = out_dir / subject / f"{name}-00000-of-00001.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.Table.from_pylist(rows), path)
            files.append({"split": name, "path": f"{subject}/{name}-*.parquet"})
        configs.append({"config_name": subject, "data_files": files})
    (out_dir / "README.md").write_text("---\n" + yaml.safe_dump({"configs": configs}, sort_keys=False) + "---\n")
    return out_dir


def read_cli_samples(output_dir: Path) -> dict[str, list[int]]:
    """Per-item correctness from an `lm_eval --log_samples` output directory: task → [acc by doc_id]."""
    out = {}
    for f in Path(output_dir).rglob("samples_*.jsonl"):
        # split on "\n" only: str.splitlines() also breaks at U+2028, which MMLU items contain
        rows = [json.loads(line) for line in f.read_text(encoding="utf-8").split("\n") if line]
        out[f.name[len("samples_") :].rsplit("_", 1)[0]] = [
            int(r["acc"]) for r in sorted(rows, key=lambda r: r["doc_id"])
        ]
    return out


if __name__ == "__main__":
    main()
