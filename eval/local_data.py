"""Serve lm-eval's own tasks (gsm8k, truthfulqa_mc1/mc2, mmlu, ...) from local files, offline.

lm-eval tasks name a hub dataset (`openai/gsm8k`); `datasets` resolves such a name to a local
directory when one exists at that relative path. `served_from` makes a working directory where each
hub id points at a local copy laid out like the hub dataset, converting the original release files
of `../shared/data` where a converter is known.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from slm.config import resolve_path
from slm.errors import UserError
from slm.eval.mmlu import SUBJECT_DOMAINS, write_hub_layout
from slm.store import cache_dir


def _write(out: Path, config: str, split: str, rows: list[dict]) -> dict:
    path = out / config / f"{split}-00000-of-00001.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return {"split": split, "path": f"{config}/{split}-*.parquet"}


def _readme(out: Path, configs: dict[str, list[dict]]) -> None:
    spec = {"configs": [{"config_name": name, "data_files": files} for name, files in configs.items()]}
    (out / "README.md").write_text("---\n" + yaml.safe_dump(spec, sort_keys=False) + "---\n")


def gsm8k_layout(src: Path, out: Path) -> None:
    """test.jsonl ({question, answer}) → openai/gsm8k's `main` config (test split only)."""
    rows = [json.loads(line) for line in (src / "test.jsonl").read_text(encoding="utf-8").split("\n") if line.strip()]
    _readme(
        out, {"main": [_write(out, "main", "test", [{"question": r["question"], "answer": r["answer"]} for r in rows])]}
    )


# Tasks that draw few-shot examples from a split the converted release files do not have.
NEEDS_TRAIN_SPLIT = {"gsm8k": ("openai/gsm8k", "gsm8k_zeroshot")}
LOCAL_TASKS = Path(__file__).resolve().parent / "tasks" / "local"


def truthfulqa_layout(src: Path, out: Path) -> None:
    """mc_task.json ({question, mc1_targets: {answer: label}, ...}) → truthfulqa/truthful_qa's
    `multiple_choice` config ({choices: [...], labels: [...]})."""
    items = json.loads((src / "mc_task.json").read_text(encoding="utf-8"))
    rows = [
        {
            "question": it["question"],
            **{
                key: {"choices": list(it[key]), "labels": [int(v) for v in it[key].values()]}
                for key in ("mc1_targets", "mc2_targets")
            },
        }
        for it in items
    ]
    _readme(out, {"multiple_choice": [_write(out, "multiple_choice", "validation", rows)]})


def mmlu_layout(src: Path, out: Path) -> None:

    write_hub_layout(src, out, list(SUBJECT_DOMAINS))


CONVERTERS = {"openai/gsm8k": gsm8k_layout, "truthfulqa/truthful_qa": truthfulqa_layout, "cais/mmlu": mmlu_layout}


def check_tasks(tasks: list[str], local_datasets: dict[str, str]) -> None:
    for task in tasks:
        if task in NEEDS_TRAIN_SPLIT:
            hub_id, alternative = NEEDS_TRAIN_SPLIT[task]
            source = local_datasets.get(hub_id)
            if source and not (resolve_path(source) / "README.md").is_file():
                raise UserError(
                    f"sweep.extra_tasks: lm-eval's {task} draws few-shot examples from a train split "
                    f"that {source} does not have; use the task {alternative} instead"
                )


def hub_layout(hub_id: str, source: str) -> Path:
    """A directory laid out like `hub_id`: `source` itself if it already is (has README.md configs),
    else a converted copy in the node cache."""
    src = resolve_path(source)
    if not src.is_dir():
        raise UserError(f"sweep.local_datasets[{hub_id!r}]: no such directory {src}")
    if (src / "README.md").is_file():
        return src
    if hub_id not in CONVERTERS:
        raise UserError(
            f"sweep.local_datasets[{hub_id!r}]: {src} is not laid out as a hub dataset and there is "
            f"no converter for it (known: {', '.join(CONVERTERS)})"
        )
    digest = hashlib.sha256(
        json.dumps(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in src.iterdir())).encode()
    ).hexdigest()[:12]
    out = cache_dir() / "hub_layouts" / hub_id.replace("/", "__") / digest
    if not (out / "README.md").is_file():
        building = out.with_name(f"{out.name}.tmp-{os.getpid()}")
        shutil.rmtree(building, ignore_errors=True)
        building.mkdir(parents=True)
        CONVERTERS[hub_id](src, building)
        os.replace(building, out)  # atomic: concurrent sweep tasks see no half-written layout
    return out


@contextlib.contextmanager
def served_from(local_datasets: dict[str, str]):
    """Run lm-eval inside a directory where every hub id resolves to its local copy."""
    if not local_datasets:
        yield
        return
    previous = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        for hub_id, source in local_datasets.items():
            link = Path(tmp) / hub_id
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(hub_layout(hub_id, source), target_is_directory=True)
        os.chdir(tmp)
        try:
            yield
        finally:
            os.chdir(previous)
