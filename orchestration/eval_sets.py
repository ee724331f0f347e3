"""What a pipeline's sweeps evaluate, as one index for decontaminating training data: all of MMLU
that `sweep.mmlu_dir` holds (test and dev, every subject), the bench's, the held-out bench's and the
drift set's prompts, and the extra
lm-eval tasks' evaluation documents (slm/contamination.py matches rows against it)."""

from __future__ import annotations

import csv

from slm.config import HygieneSpec, PipelineConfig, SweepSpec, resolve_path
from slm.contamination import EvalIndex, EvalItem
from slm.errors import UserError
from slm.eval.bench import load_bench
from slm.eval.drift import load_drift


def eval_index(pipeline: PipelineConfig, hygiene: HygieneSpec | None = None) -> EvalIndex:
    return eval_index_for(pipeline.sweep, hygiene or HygieneSpec())


def eval_index_for(sweep: SweepSpec, spec: HygieneSpec) -> EvalIndex:
    """All of MMLU that `sweep.mmlu_dir` holds (test and dev: every subject, not only the swept ones),
    the bench's prompts, and the extra lm-eval tasks' evaluation documents."""
    items, sources = [], {}
    mmlu_items, sources["mmlu"] = mmlu_items_from(sweep.mmlu_dir)
    items += mmlu_items
    if sweep.bench:
        bench = resolve_path(sweep.bench)
        items += [EvalItem("bench", b["id"], b["prompt"]) for b in load_bench(bench)]
        sources["bench"] = str(sweep.bench)
    if sweep.heldout:  # held out from every builder: a row that shares a run of words with it is dropped
        items += [EvalItem("heldout", b["id"], b["prompt"]) for b in load_bench(resolve_path(sweep.heldout))]
        sources["heldout"] = str(sweep.heldout)
    if sweep.drift:
        items += [EvalItem("drift", d["id"], d["prompt"]) for d in load_drift(resolve_path(sweep.drift))]
        sources["drift"] = str(sweep.drift)
    for task in sweep.extra_tasks:
        task_items = extra_task_items(task, sweep)
        items += task_items
        sources[task] = f"lm-eval task {task}"
    return EvalIndex(items, spec.ngram, spec.min_item_words, sources)


def mmlu_items_from(mmlu_dir: str) -> tuple[list[EvalItem], str]:
    """Question and choices of every MMLU item in a CSV-layout directory (test and dev), or of
    `hf:<dataset>` (config `all`)."""
    if mmlu_dir.startswith("hf:"):
        from datasets import load_dataset

        items = []
        for split in ("test", "dev"):
            try:
                data = load_dataset(mmlu_dir[3:], "all", split=split)
            except Exception as exc:
                raise UserError(
                    f"decontamination: sweep.mmlu_dir {mmlu_dir} could not be loaded "
                    f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
                ) from None
            items += [
                EvalItem("mmlu", f"{row['subject']}/{split}/{i}", " ".join([row["question"], *row["choices"]]))
                for i, row in enumerate(data)
            ]
        return items, mmlu_dir
    root = resolve_path(mmlu_dir)
    files = sorted(p for split in ("test", "dev") for p in (root / split).glob(f"*_{split}.csv"))
    if not files:
        raise UserError(f"decontamination: no MMLU CSV files under {root}/test or {root}/dev (sweep.mmlu_dir)")
    items = []
    for file in files:
        with open(file, newline="", encoding="utf-8") as f:
            for i, row in enumerate(csv.reader(f)):
                if len(row) >= 6:
                    items.append(EvalItem("mmlu", f"{file.stem}/{i}", " ".join(row[:5])))
    return items, str(root)


def extra_task_items(task: str, sweep: SweepSpec) -> list[EvalItem]:
    """An lm-eval task's evaluation documents as lm-eval renders them (its own doc_to_text)."""
    from lm_eval.tasks import TaskManager, get_task_dict

    from slm.eval.local_data import LOCAL_TASKS, served_from

    items = []
    with served_from(sweep.local_datasets):
        tasks = get_task_dict([task], TaskManager(include_path=str(LOCAL_TASKS)))
        for name, obj in _leaf_tasks(tasks):
            docs = obj.test_docs() if obj.has_test_docs() else obj.validation_docs()
            for i, doc in enumerate(docs):
                text = obj.doc_to_text(doc)
                items.append(EvalItem(task, f"{name}/{i}", text if isinstance(text, str) else str(text)))
    if not items:
        raise UserError(f"decontamination: lm-eval task {task!r} gave no evaluation documents")
    return items


def _leaf_tasks(tasks: dict):
    for name, obj in tasks.items():
        if isinstance(obj, dict):
            yield from _leaf_tasks(obj)
        else:
            yield getattr(name, "group_name", name), obj
