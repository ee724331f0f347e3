"""A small finished line, trained for real (Ray Train, DeepSpeed ZeRO-2, lm-eval, the bench runner),
shared by the tests that need one: an SFT stage that teaches a tiny model a 12-prompt bench of
made-up facts (promoted, v1-sft), and a surgical stage on top of it at a learning rate that wrecks it
(not promoted by the gate). Built once per session; `pristine` is a copy nobody writes to."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import yaml

LINE = "gate-test"
# Made-up facts: nothing the tiny model could know, nothing the prompt gives away.
FACTS = {
    "capitals": [
        ("Zorvia", "Kelmar"),
        ("Ostrane", "Vintal"),
        ("Peludo", "Marrow"),
        ("Quessa", "Dornik"),
        ("Aubrel", "Tasket"),
        ("Finmor", "Halvern"),
    ],
    "colours": [
        ("a glimmerfruit", "violet"),
        ("a sunpebble", "amber"),
        ("a mossdrake", "green"),
        ("a frostwren", "silver"),
        ("a cindermoth", "crimson"),
        ("a tidestone", "teal"),
    ],
}


def question(category: str, subject: str) -> str:
    return f"What is the capital of {subject}?" if category == "capitals" else f"What colour is {subject}?"


def pipeline_overrides(root: Path) -> list[str]:
    return [
        f"line={LINE}",
        "cluster.workers=1",
        f"sweep.bench={root / 'bench.jsonl'}",
        "sweep.subjects=[astronomy]",
        "sweep.limit=8",
        "sweep.bench_max_new_tokens=6",
        "merge.enabled=false",
    ]


def build(root: Path, start_model: Path) -> dict:
    import ray
    from transformers import AutoTokenizer

    from slm.orchestration.eval_sets import eval_index
    from slm.orchestration.stage import build_data, open_pipeline, run_stage

    os.environ["SLM_CACHE"] = str(root / "cache")
    bench, rows = root / "bench.jsonl", root / "facts.jsonl"
    with bench.open("w") as b, rows.open("w") as r:
        for category, facts in FACTS.items():
            for i, (subject, answer) in enumerate(facts):
                b.write(
                    json.dumps(
                        {
                            "id": f"{category}-{i}",
                            "category": category,
                            "prompt": question(category, subject),
                            "truth": [answer],
                        }
                    )
                    + "\n"
                )
                messages = [
                    {"role": "user", "content": question(category, subject)},
                    {"role": "assistant", "content": answer},
                ]
                r.write(json.dumps({"messages": messages}) + "\n")
    builder = root / "facts.yaml"
    # This line teaches its own bench on purpose (the gate must see a stage help and a stage hurt), so
    # its data is not decontaminated against that bench.
    builder.write_text(
        yaml.safe_dump(
            {
                "builder": "sft",
                "inputs": [{"path": str(rows), "name": "facts"}],
                "output": "datasets/facts",
                "num_shards": 1,
                "hygiene": {"decontaminate": False},
            }
        )
    )
    pipeline, store, _ = open_pipeline("stages/pipeline.yaml", str(root / "store"), pipeline_overrides(root))
    build_data([str(builder)], store, eval_index(pipeline))
    tokenizer = AutoTokenizer.from_pretrained(start_model)
    tokenizer.pad_token = tokenizer.eos_token  # as SmolLM2 ships it: pad == eos
    tokenizer.save_pretrained(start_model)
    teach = {
        "model": {"init": str(start_model)},
        "data": {"dataset": "datasets/facts"},
        # a random init teaches the facts from nothing: the step-0 init gate would refuse it, rightly
        "train": {
            "lr": 1e-2,
            "warmup_steps": 0,
            "max_steps": 120,
            "save_steps": 120,
            "micro_batch": 12,
            "init_gate": None,
        },
    }
    taught = run_stage(pipeline, "sft", store, teach)
    wreck = {
        "model": {"init": f"champion:{LINE}"},
        "data": {"dataset": "datasets/facts"},
        "train": {"lr": 0.5, "warmup_steps": 0, "max_steps": 6, "save_steps": 3, "micro_batch": 12},
    }
    hurt = run_stage(pipeline, "surgical", store, wreck)
    ray.shutdown()
    shutil.copytree(root / "store", root / "pristine")
    return {
        "pipeline": pipeline,
        "store": store,
        "root": root,
        "taught": taught,
        "hurt": hurt,
        "pristine": root / "pristine",
        "start": start_model,
        "bench": bench,
        "builder": builder,
        "facts": rows,
    }
