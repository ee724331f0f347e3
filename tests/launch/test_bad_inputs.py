"""What a careful new user can get wrong, against every entry point, on a copy of a finished store.

Each case runs a launcher as `python launch/<script>.py ...` would (its `__main__`, in this process, so
the module stays fast) and must end with exit status 2, exactly one `error:` line on stderr that
names the file, key or reference at fault, no traceback, no Ray worker started, and the store
byte-for-byte as it was (sha256 of every file before and after). The store is the session's
finished line (tests/support/gated_line.py): v1-sft promoted, a surgical run the gate kept out.
"""

from __future__ import annotations

import hashlib
import json
import runpy
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from slm import REPO_ROOT
from tests.support.gated_line import LINE, pipeline_overrides

pytestmark = pytest.mark.slow  # the shared finished line trains two small stages (about 100 s, once)
LAUNCH = REPO_ROOT / "launch"


@dataclass
class Case:
    id: str
    argv: Callable[[SimpleNamespace], list[str]]  # script name first
    expect: str | Callable[[SimpleNamespace], str]  # a part of the error line
    setup: Callable[[SimpleNamespace], None] | None = None  # may write files, and change the store before the snapshot
    env: dict = field(default_factory=dict)


def tree_digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def write(ctx, name: str, text: str | bytes) -> Path:
    path = ctx.tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def pipeline_yaml(ctx, name: str = "pipeline.yaml", edit: Callable[[dict], None] = lambda c: None) -> Path:
    config = yaml.safe_load((REPO_ROOT / "stages/pipeline.yaml").read_text())
    edit(config)
    return write(ctx, name, yaml.safe_dump(config))


def stage_yaml(ctx, stage: str, edit: Callable[[dict], None], name: str | None = None) -> Path:
    config = yaml.safe_load((REPO_ROOT / f"stages/configs/{stage}.yaml").read_text())
    edit(config)
    return write(ctx, name or f"{stage}-stage.yaml", yaml.safe_dump(config))


def common(ctx) -> list[str]:
    """--store and the line's settings, as the finished line was made with."""
    out = ["--store", str(ctx.store)]
    for pair in pipeline_overrides(ctx.line_root):
        out += ["--set", pair]
    return out


def stage_sft(ctx, *extra: str) -> list[str]:
    """`launch/stage.py sft` on the line's facts dataset from a fresh tiny model: valid unless `extra` breaks it."""
    return [
        "stage.py",
        "sft",
        *common(ctx),
        "--set",
        "sft.data.dataset=datasets/facts",
        "--set",
        f"sft.model.init={ctx.start}",
        *extra,
    ]


def ds_edited(ctx, edit: Callable[[dict], None] | None = None, raw: str | None = None) -> list[str]:
    """--set deepspeed= a copy of ds_configs/zero2.json changed by `edit`, or the text `raw`."""
    config = json.loads((REPO_ROOT / "ds_configs" / "zero2.json").read_text())
    if edit:
        edit(config)
    return ["--set", f"deepspeed={write(ctx, 'ds.json', raw if raw is not None else json.dumps(config))}"]


def set_key(path: str, value):
    def edit(config):
        node = config
        keys = path.split(".")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value

    return edit


def model_dir(ctx, name: str, drop: tuple[str, ...] = (), files: dict | None = None) -> Path:
    """A copy of the tiny start model with some files removed or replaced."""
    path = ctx.tmp / name
    shutil.copytree(ctx.start, path)
    for rel in drop:
        (path / rel).unlink()
    for rel, text in (files or {}).items():
        (path / rel).write_text(text)
    return path


def flip_bytes(path: Path, at: int = 4096) -> None:
    """Change 4 bytes of a file in place, its size and the tree's marker left as they were."""
    data = bytearray(path.read_bytes())
    data[at : at + 4] = bytes(b ^ 0xFF for b in data[at : at + 4])
    path.write_bytes(bytes(data))


def break_weights(path: Path, how: str) -> Path:
    """A model directory's model.safetensors made unloadable as a model, as a crash or a diverged run
    leaves it: one tensor dropped, every value NaN, a header that is not JSON, or the file cut short
    (a copy or an upload that stopped halfway)."""
    import torch
    from safetensors.torch import load_file, save_file

    file = path / "model.safetensors"
    if how == "header":
        data = bytearray(file.read_bytes())
        data[8:16] = b"\xff\xfe{{{{{{"
        file.write_bytes(bytes(data))
        return path
    if how == "truncated":
        file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
        return path
    tensors = load_file(file)
    if how == "drop-tensor":
        tensors.pop(sorted(tensors)[-1])
    elif how == "nan":
        tensors = {k: torch.full_like(v, float("nan")) for k, v in tensors.items()}
    save_file(tensors, file, metadata={"format": "pt"})
    return path


BROKEN_WEIGHTS = {
    "drop-tensor": "weights do not match its config.json: tensors 1 missing",
    "nan": "NaN or infinite value(s)",
    "header": "not a readable safetensors file",
    "truncated": "not a readable safetensors file",
}


def nan_checkpoint_in_store(ctx) -> None:
    """A run's checkpoint whose weights went NaN before it was saved: the marker matches its files."""
    (checkpoint, *_) = sorted((ctx.store / ctx.sft_run / "checkpoints").glob("checkpoint-*"))
    break_weights(checkpoint, "nan")
    marker = checkpoint / "_COMPLETE.json"
    manifest = json.loads(marker.read_text())
    file = checkpoint / "model.safetensors"
    manifest["files"]["model.safetensors"] = {
        "sha256": hashlib.sha256(file.read_bytes()).hexdigest(),
        "size": file.stat().st_size,
    }
    marker.write_text(json.dumps(manifest))


def edit_latest(ctx, **changes) -> None:
    """Damage the line's latest.json in the store (a hand edit, a bad sync)."""
    path = ctx.store / "champions" / LINE / "latest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def dataset_files(ctx) -> Path:
    return ctx.store / "datasets/facts"


def tamper_dataset(change: Callable[[Path, dict, dict], None]):
    """Change the facts dataset in the store: change(dataset dir, manifest, completion record) edits both
    dicts in place; they are written back, the completion record made to match the files again (so only
    the manifest's own checks can catch it)."""

    def setup(ctx):
        root = dataset_files(ctx)
        manifest = json.loads((root / "manifest.json").read_text())
        complete = json.loads((root / "_COMPLETE.json").read_text())
        change(root, manifest, complete)
        (root / "manifest.json").write_text(json.dumps(manifest, indent=2))
        for rel, info in complete["files"].items():
            file = root / rel
            if file.is_file():
                info.update(sha256=hashlib.sha256(file.read_bytes()).hexdigest(), size=file.stat().st_size)
        complete["files"] = {rel: info for rel, info in complete["files"].items() if (root / rel).is_file()}
        (root / "_COMPLETE.json").write_text(json.dumps(complete, indent=2))

    return setup


def swap_shard(root: Path, manifest: dict, complete: dict) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    shard = root / manifest["splits"]["train"]["shards"][0]["file"]
    table = pq.read_table(shard)
    pq.write_table(pa.concat_tables([table, table]), shard)  # a valid shard, of other (here: doubled) rows


def truncate_shard(root: Path, manifest: dict, complete: dict) -> None:
    shard = root / manifest["splits"]["train"]["shards"][0]["file"]
    shard.write_bytes(shard.read_bytes()[:100])


def drop_shard(root: Path, manifest: dict, complete: dict) -> None:
    (root / manifest["splits"]["train"]["shards"][0]["file"]).unlink()


def miscount_rows(root: Path, manifest: dict, complete: dict) -> None:
    manifest["splits"]["train"]["rows"] += 5


def builder_cfg(ctx, body: dict, name: str = "builder.yaml") -> list[str]:
    config = {"builder": "sft", "output": "datasets/new", "num_shards": 1, **body}
    return ["build_data.py", str(write(ctx, name, yaml.safe_dump(config))), *common(ctx)]


def rows_file(ctx, name: str, rows: list, raw: bytes | None = None) -> str:
    return str(write(ctx, name, raw if raw is not None else "".join(json.dumps(r) + "\n" for r in rows)))


def bench_file(ctx, text: str | bytes) -> list[str]:
    return ["--set", f"sweep.bench={write(ctx, 'bench.jsonl', text)}"]


GOOD_ROW = {"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]}
GOOD_BENCH = json.dumps({"id": "a", "category": "c", "prompt": "What is the capital of Zorvia?", "truth": ["Kelmar"]})


def promote_surgical_by_hand(ctx):
    """Make the surgical run v2 (overruling the gate), so v1-sft is an older champion."""
    run_entry(["promote.py", ctx.surgical_run, *common(ctx), "--reason", "a newer champion for the rewind case"])


CASES = [
    # --- the pipeline file ----------------------------------------------------------------------------
    Case(
        "pipeline-missing",
        lambda c: ["pipeline.py", "--pipeline", str(c.tmp / "nope.yaml"), *common(c)],
        "config file not found",
    ),
    Case(
        "pipeline-yaml-syntax",
        lambda c: [
            "pipeline.py",
            "--pipeline",
            str(write(c, "p.yaml", "line: x\nstore: s\nstages: [\n  {name: sft\n")),
            "--store",
            str(c.store),
        ],
        "not valid YAML at line 5",
    ),
    Case(
        "pipeline-not-a-mapping",
        lambda c: ["pipeline.py", "--pipeline", str(write(c, "p.yaml", "- a\n- b\n")), "--store", str(c.store)],
        "expected a mapping at the top level",
    ),
    Case(
        "pipeline-empty",
        lambda c: ["pipeline.py", "--pipeline", str(write(c, "p.yaml", "")), "--store", str(c.store)],
        "missing key 'line'",
    ),
    Case(
        "pipeline-not-utf8",
        lambda c: ["pipeline.py", "--pipeline", str(write(c, "p.yaml", b"line: caf\xe9\n")), "--store", str(c.store)],
        "not UTF-8 text (byte 9",
    ),
    Case(
        "pipeline-unknown-key",
        lambda c: ["pipeline.py", "--pipeline", str(pipeline_yaml(c, edit=set_key("gpus", 8))), *common(c)],
        "unknown key 'gpus'",
    ),
    Case(
        "pipeline-unknown-nested-key",
        lambda c: ["pipeline.py", "--pipeline", str(pipeline_yaml(c, edit=set_key("sweep.subject", "x"))), *common(c)],
        "unknown key 'sweep.subject'",
    ),
    Case(
        "pipeline-wrong-type",
        lambda c: [
            "pipeline.py",
            "--pipeline",
            str(pipeline_yaml(c, edit=set_key("cluster.max_failures", "many"))),
            *common(c),
        ],
        "cluster.max_failures: Input should be a valid integer",
    ),
    Case(
        "pipeline-duplicate-stage",
        lambda c: [
            "pipeline.py",
            "--pipeline",
            str(pipeline_yaml(c, edit=lambda p: p["stages"].insert(1, dict(p["stages"][1])))),
            *common(c),
        ],
        "stage(s) listed more than once: sft",
    ),
    Case(
        "pipeline-stage-order",
        lambda c: [
            "pipeline.py",
            "--pipeline",
            str(pipeline_yaml(c, edit=lambda p: p["stages"].reverse())),
            *common(c),
        ],
        "stages must run in the order",
    ),
    Case(
        "pipeline-unknown-stage-name",
        lambda c: [
            "pipeline.py",
            "--pipeline",
            str(pipeline_yaml(c, edit=lambda p: p["stages"][0].update(name="rlhf"))),
            *common(c),
        ],
        "stages.0.name",
    ),
    Case(
        "pipeline-stage-config-missing",
        lambda c: [
            "pipeline.py",
            "--pipeline",
            str(pipeline_yaml(c, edit=lambda p: p["stages"][-1].update(config="stages/configs/nope.yaml"))),
            *common(c),
        ],
        "stage repair: its config file",
    ),
    Case(
        "pipeline-later-stage-config-bad",
        lambda c: [
            "pipeline.py",
            "--pipeline",
            str(
                pipeline_yaml(
                    c,
                    edit=lambda p: p["stages"][-1].update(config=str(stage_yaml(c, "repair", set_key("train.lrr", 1)))),
                )
            ),
            *common(c),
        ],
        "unknown key 'train.lrr'",
    ),
    Case(
        "pipeline-stage-set-bad",
        lambda c: [
            "pipeline.py",
            "--pipeline",
            str(pipeline_yaml(c, edit=lambda p: p["stages"][-1].update(set={"train": {"lrr": 1}}))),
            *common(c),
        ],
        "(stages: repair: set: train.lrr)",
    ),
    Case(
        "pipeline-stage-declares-other",
        lambda c: [
            "pipeline.py",
            "--pipeline",
            str(pipeline_yaml(c, edit=lambda p: p["stages"][-1].update(config="stages/configs/surgical.yaml"))),
            *common(c),
        ],
        "declares stage 'surgical' but the pipeline lists it as 'repair'",
    ),
    Case(
        "pipeline-builder-missing",
        lambda c: [
            "pipeline.py",
            "--pipeline",
            str(pipeline_yaml(c, edit=lambda p: p["stages"][-1].update(builders=["data_builders/configs/nope.yaml"]))),
            *common(c),
        ],
        "config file not found",
    ),
    Case(
        "pipeline-builder-unknown-key",
        lambda c: [
            "pipeline.py",
            "--pipeline",
            str(
                pipeline_yaml(
                    c,
                    edit=lambda p: p["stages"][-1].update(
                        builders=[
                            str(write(c, "b.yaml", "builder: repair\ninputs: [{path: x}]\noutput: o\nshards: 3\n"))
                        ]
                    ),
                )
            ),
            *common(c),
        ],
        "unknown key 'shards'",
    ),
    Case(
        "pipeline-later-stage-deepspeed-missing",
        lambda c: [
            "pipeline.py",
            "--pipeline",
            str(pipeline_yaml(c, edit=lambda p: p["stages"][-1].update(set={"deepspeed": "ds_configs/nope.json"}))),
            *common(c),
        ],
        "deepspeed config not found",
    ),
    Case("pipeline-only-unknown", lambda c: ["pipeline.py", *common(c), "--only", "rlhf"], "unknown stage 'rlhf'"),
    Case(
        "pipeline-line-name", lambda c: ["pipeline.py", *common(c), "--set", "line=../x"], "line: String should match"
    ),
    Case(
        "pipeline-mmlu-missing",
        lambda c: ["pipeline.py", *common(c), "--set", f"sweep.mmlu_dir={c.tmp}/mmlu"],
        "sweep.mmlu_dir: no MMLU data at",
    ),
    Case(
        "pipeline-mmlu-subject-missing",
        lambda c: ["pipeline.py", *common(c), "--set", "sweep.subjects=[virology]"],
        "no test file for 1 of the 1 subjects (first: virology)",
    ),
    Case(
        "pipeline-unknown-subject",
        lambda c: ["pipeline.py", *common(c), "--set", "sweep.subjects=[astrology]"],
        "unknown MMLU subject(s) astrology",
    ),
    # --- the bench file -------------------------------------------------------------------------------
    Case(
        "bench-missing", lambda c: ["pipeline.py", *common(c), "--set", f"sweep.bench={c.tmp}/nope.jsonl"], "nope.jsonl"
    ),
    Case(
        "bench-10mb-line",
        lambda c: [
            "pipeline.py",
            *common(c),
            *bench_file(c, json.dumps({"id": "a", "category": "c", "prompt": "x" * 10_000_000, "truth": ["y"]}) + "\n"),
        ],
        "bench.jsonl:1: prompt of 10,000,000 characters",
    ),
    Case(
        "bench-10mb-answers",
        lambda c: [
            "pipeline.py",
            *common(c),
            *bench_file(
                c, json.dumps({"id": "a", "category": "c", "prompt": "p", "truth": ["y" * 1000] * 10_000}) + "\n"
            ),
        ],
        "bench.jsonl:1: an item of 10,",
    ),
    Case(
        "bench-bad-json",
        lambda c: ["pipeline.py", *common(c), *bench_file(c, GOOD_BENCH + "\n{oops\n")],
        "bench.jsonl:2",
    ),
    Case(
        "bench-no-truth",
        lambda c: [
            "pipeline.py",
            *common(c),
            *bench_file(c, json.dumps({"id": "a", "category": "c", "prompt": "p"}) + "\n"),
        ],
        "bench.jsonl:1",
    ),
    Case(
        "bench-unknown-key",
        lambda c: [
            "pipeline.py",
            *common(c),
            *bench_file(
                c, json.dumps({"id": "a", "category": "c", "prompt": "p", "truth": ["t"], "answer": "t"}) + "\n"
            ),
        ],
        "bench.jsonl:1: unknown key(s) answer",
    ),
    Case(
        "bench-duplicate-id",
        lambda c: ["pipeline.py", *common(c), *bench_file(c, GOOD_BENCH + "\n" + GOOD_BENCH + "\n")],
        "bench.jsonl:2: duplicate id 'a'",
    ),
    Case("bench-empty", lambda c: ["pipeline.py", *common(c), *bench_file(c, "")], "bench.jsonl"),
    Case(
        "bench-not-utf8",
        lambda c: ["pipeline.py", *common(c), *bench_file(c, GOOD_BENCH.encode() + b"\n\xff\n")],
        "bench.jsonl",
    ),
    # --- --set ----------------------------------------------------------------------------------------
    Case(
        "set-no-equals",
        lambda c: ["stage.py", "sft", *common(c), "--set", "train.lr"],
        "--set train.lr: not of the form",
    ),
    Case("set-no-key", lambda c: ["stage.py", "sft", *common(c), "--set", "=5"], "--set =5"),
    Case(
        "set-unknown-stage-key",
        lambda c: ["stage.py", "sft", *common(c), "--set", "train.lrr=1"],
        "--set train.lrr=1 (over",
    ),
    Case(
        "set-bad-yaml",
        lambda c: ["stage.py", "sft", *common(c), "--set", "train.lr=[1,"],
        "--set train.lr=[1,: the value is not valid YAML",
    ),
    Case(
        "set-wrong-type",
        lambda c: ["stage.py", "sft", *common(c), "--set", "train.lr=fast"],
        "--set train.lr=fast (over",
    ),
    Case(
        "set-unknown-head",
        lambda c: ["stage.py", "sft", *common(c), "--set", "gpus=8"],
        "--set gpus=8: 'gpus' is neither a pipeline key",
    ),
    Case(
        "set-stage-without-key",
        lambda c: ["stage.py", "sft", *common(c), "--set", "repair.lrr=3"],
        "--set repair.lrr=3: name a key of the repair stage",
    ),
    Case(
        "set-negative-max-steps",
        lambda c: ["stage.py", "sft", *common(c), "--set", "train.max_steps=-5"],
        "--set train.max_steps=-5 (over",
    ),
    Case(
        "set-zero-micro-batch",
        lambda c: ["stage.py", "sft", *common(c), "--set", "train.micro_batch=0"],
        "--set train.micro_batch=0 (over",
    ),
    Case(
        "set-zero-workers",
        lambda c: ["stage.py", "sft", *common(c), "--set", "cluster.workers=0"],
        "--set cluster.workers=0 (over",
    ),
    Case(
        "set-gate-alpha",
        lambda c: ["stage.py", "sft", *common(c), "--set", "selection.gate.alpha=2"],
        "--set selection.gate.alpha=2 (over",
    ),
    Case(
        "set-slerp-t", lambda c: ["stage.py", "sft", *common(c), "--set", "merge.t=[1.5]"], "SLERP t must be in (0, 1)"
    ),
    Case(
        "set-value-then-key",
        lambda c: ["stage.py", "sft", *common(c), "--set", "train.lr=1", "--set", "train.lr.x=2"],
        "--set train.lr.x=2",
    ),
    Case(
        "set-unknown-named-stage-key",
        lambda c: ["pipeline.py", *common(c), "--set", "repair.train.lrr=1"],
        "--set repair.train.lrr=1 (over",
    ),
    Case(
        "set-schedule",
        lambda c: ["stage.py", "sft", *common(c), "--set", "train.schedule=exp"],
        "--set train.schedule=exp (over",
    ),
    Case("stage-unknown", lambda c: ["stage.py", "rlhf", *common(c)], "unknown stage 'rlhf'"),
    # --- stage configs and DeepSpeed ------------------------------------------------------------------
    Case("ds-missing", lambda c: stage_sft(c, "--set", f"deepspeed={c.tmp}/nope.json"), "deepspeed config not found"),
    Case(
        "ds-not-json",
        lambda c: stage_sft(c, "--set", f"deepspeed={write(c, 'ds.json', '{stage: 2')}"),
        "ds.json: not valid JSON",
    ),
    Case(
        "ds-a-list",
        lambda c: stage_sft(c, "--set", f"deepspeed={write(c, 'ds.json', '[1, 2]')}"),
        "ds.json: expected a JSON object",
    ),
    Case(
        "ds-no-zero",
        lambda c: stage_sft(c, "--set", f"deepspeed={write(c, 'ds.json', '{}')}"),
        "ds.json: no zero_optimization section",
    ),
    Case(
        "ds-zero-stage-7",
        lambda c: stage_sft(
            c, "--set", f"deepspeed={write(c, 'ds.json', json.dumps({'zero_optimization': {'stage': 7}}))}"
        ),
        "zero_optimization.stage is 7",
    ),
    Case(
        "ds-unknown-zero-key",
        lambda c: stage_sft(
            c,
            "--set",
            f"deepspeed={write(c, 'ds.json', json.dumps({'zero_optimization': {'stage': 2, 'overlap': True}}))}",
        ),
        "zero_optimization.overlap: Extra inputs are not permitted",
    ),
    Case(
        "ds-offload-device",
        lambda c: stage_sft(
            c,
            "--set",
            "deepspeed="
            + str(
                write(
                    c,
                    "ds.json",
                    json.dumps({"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "gpu2"}}}),
                )
            ),
        ),
        "zero_optimization.offload_optimizer.device",
    ),
    *[
        Case(f"ds-{name}", lambda c, e=edit, r=raw: stage_sft(c, *ds_edited(c, e, r)), expect)
        for name, edit, raw, expect in (
            (
                "bf16-and-fp16",
                lambda d: d.update(bf16={"enabled": True}, fp16={"enabled": True}),
                None,
                "fp16.enabled and bf16.enabled are both true",
            ),
            (
                "fp16-on-an-fp32-stage",
                lambda d: d.update(fp16={"enabled": True}),
                None,
                "fp16.enabled=True but the stage trains fp32 (train.precision)",
            ),
            (
                "batch-disagrees",
                lambda d: d.update(train_batch_size=99999),
                None,
                "train_batch_size=99999 but the stage's train.micro_batch x train.grad_accum x 1 worker(s)",
            ),
            (
                "accum-disagrees",
                lambda d: d.update(gradient_accumulation_steps=99),
                None,
                "gradient_accumulation_steps=99 but the stage's train.grad_accum",
            ),
            (
                "lr-disagrees",
                lambda d: d["optimizer"]["params"].update(lr=3.0),
                None,
                "optimizer.params.lr=3.0 but the stage's train.lr",
            ),
            ("unknown-optimizer", lambda d: d["optimizer"].update(type="AdamWW"), None, "optimizer.type 'AdamWW'"),
            (
                "clipping-nan",
                None,
                '{"zero_optimization": {"stage": 2}, "gradient_clipping": NaN}',
                "NaN is not a JSON number",
            ),
            (
                "unknown-top-key",
                lambda d: d.update(zero_optimisation={"stage": 3}),
                None,
                "does not read the top-level key(s) 'zero_optimisation'",
            ),
            (
                "removed-feature",
                lambda d: d.update(sparse_attention={"mode": "fixed"}),
                None,
                "DeepSpeed Sparse Attention has been removed",
            ),
            (
                "duplicate-key",
                None,
                '{"zero_optimization": {"stage": 2}, "zero_optimization": {"stage": 3}}',
                "key 'zero_optimization' is given twice",
            ),
        )
    ],
    Case("stage-precision", lambda c: stage_sft(c, "--set", "train.precision=fp8"), "--set train.precision=fp8 (over"),
    Case("stage-objective", lambda c: stage_sft(c, "--set", "objective=dpo"), "trains with objective 'chat_sft'"),
    Case(
        "stage-lora-on-pretrain",
        lambda c: ["stage.py", "pretrain", *common(c), "--set", "lora.r=4"],
        "kl_anchor and lora are options of the fine-tuning stages",
    ),
    Case(
        "stage-logit-distill-on-sft",
        lambda c: stage_sft(c, "--set", "logit_distill.teacher=x"),
        "logit_distill is an option of the distill stage",
    ),
    Case("stage-experiment-name", lambda c: stage_sft(c, "--set", "experiment.name=a b"), "experiment.name"),
    Case("stage-max-length", lambda c: stage_sft(c, "--set", "data.max_length=4"), "--set data.max_length=4 (over"),
    Case(
        "stage-scratch-without-architecture",
        lambda c: stage_sft(c, "--set", "sft.model.init=scratch"),
        "init: scratch needs both `architecture` and `tokenizer`",
    ),
    # --- model references -----------------------------------------------------------------------------
    Case(
        "model-missing-dir", lambda c: stage_sft(c, "--set", f"sft.model.init={c.tmp}/gone"), lambda c: f"{c.tmp}/gone"
    ),
    Case(
        "model-hub-offline",
        lambda c: stage_sft(c, "--set", "sft.model.init=hf:nobody/no-such-model"),
        "nobody/no-such-model",
    ),
    Case(
        "model-unknown-line",
        lambda c: stage_sft(c, "--set", "sft.model.init=champion:no-line"),
        "no champion promoted yet",
    ),
    Case(
        "model-stage-never-promoted",
        lambda c: stage_sft(c, "--set", f"sft.model.init=champion:{LINE}:repair"),
        "no champion promoted yet from stage 'repair'",
    ),
    Case(
        "model-stage-kept-out-by-gate",
        lambda c: stage_sft(c, "--set", f"sft.model.init=champion:{LINE}:surgical"),
        "was not promoted: regresses vs its input model",
    ),
    Case("model-unknown-version", lambda c: stage_sft(c, "--set", f"sft.model.init=champion:{LINE}@v9-sft"), "v9-sft"),
    Case("model-store-key-missing", lambda c: stage_sft(c, "--set", "sft.model.init=store:models/none"), "models/none"),
    Case(
        "model-broken-config-json",
        lambda c: stage_sft(c, "--set", f"sft.model.init={model_dir(c, 'm', files={'config.json': '{not json'})}"),
        "config.json: not valid JSON",
    ),
    Case(
        "model-no-weights",
        lambda c: stage_sft(c, "--set", f"sft.model.init={model_dir(c, 'm', drop=('model.safetensors',))}"),
        "no *.safetensors weights",
    ),
    Case(
        "model-unknown-type",
        lambda c: stage_sft(
            c,
            "--set",
            f"sft.model.init={model_dir(c, 'm', files={'config.json': json.dumps({'model_type': 'nosuchmodel'})})}",
        ),
        "model_type 'nosuchmodel'",
    ),
    Case(
        "model-architecture-mismatch",
        lambda c: stage_sft(c, "--set", "sft.model.architecture={model_type: gpt2, n_layer: 12}"),
        "architecture mismatch (n_layer: config says 12, checkpoint has 2)",
    ),
    Case(
        "model-no-tokenizer",
        lambda c: stage_sft(
            c, "--set", f"sft.model.init={model_dir(c, 'm', drop=('tokenizer.json', 'tokenizer_config.json'))}"
        ),
        "tokenizer",
    ),
    Case(
        "model-tokenizer-with-pretrained-init",
        lambda c: stage_sft(c, "--set", f"sft.model.tokenizer={c.tmp}/t"),
        "model.tokenizer is only used with init: scratch",
    ),
    Case(
        "model-scratch-tokenizer-missing",
        lambda c: ["stage.py", "pretrain", *common(c), "--set", f"pretrain.model.tokenizer={c.tmp}/no-tokenizer"],
        "no-tokenizer",
    ),
    Case(
        "model-no-config-json",
        lambda c: stage_sft(c, "--set", f"sft.model.init={model_dir(c, 'm', drop=('config.json',))}"),
        "config.json missing",
    ),
    Case(
        "model-s3-no-endpoint",
        lambda c: stage_sft(c, "--set", "sft.model.init=s3://bucket/model"),
        "s3://bucket",
        env={
            "AWS_ENDPOINT_URL": "http://user:hunter2@127.0.0.1:9",
            "AWS_ACCESS_KEY_ID": "a",
            "AWS_SECRET_ACCESS_KEY": "b",
        },
    ),
    # --- builders and their inputs --------------------------------------------------------------------
    Case(
        "builder-config-missing",
        lambda c: ["build_data.py", str(c.tmp / "nope.yaml"), *common(c)],
        "config file not found",
    ),
    Case(
        "builder-yaml-syntax",
        lambda c: ["build_data.py", str(write(c, "b.yaml", "builder: sft\ninputs: [\n")), *common(c)],
        "not valid YAML at line 3",
    ),
    Case(
        "builder-unknown",
        lambda c: builder_cfg(c, {"builder": "rlhf", "inputs": [{"path": "x"}]}),
        "builder: Input should be",
    ),
    Case(
        "builder-unknown-key",
        lambda c: builder_cfg(c, {"inputs": [{"path": "x"}], "shards": 2}),
        "unknown key 'shards'",
    ),
    Case("builder-no-inputs", lambda c: builder_cfg(c, {"inputs": []}), "inputs: List should have at least 1 item"),
    Case(
        "builder-input-missing",
        lambda c: builder_cfg(c, {"inputs": [{"path": str(c.tmp / "none.jsonl")}]}),
        "input file not found",
    ),
    Case(
        "builder-input-is-a-directory",
        lambda c: builder_cfg(c, {"inputs": [{"path": str(c.tmp)}]}),
        "input file not found",
    ),
    Case(
        "builder-path-and-dataset",
        lambda c: builder_cfg(c, {"inputs": [{"path": "x", "dataset": "datasets/facts"}]}),
        "give exactly one of `path`",
    ),
    Case("builder-zero-shards", lambda c: builder_cfg(c, {"inputs": [{"path": "x"}], "num_shards": 0}), "num_shards"),
    Case(
        "builder-negative-weight",
        lambda c: builder_cfg(c, {"inputs": [{"path": "x", "weight": -1}]}),
        "inputs.0.weight",
    ),
    Case(
        "builder-dataset-missing",
        lambda c: builder_cfg(c, {"inputs": [{"dataset": "datasets/none"}]}),
        "input dataset datasets/none not found",
    ),
    Case(
        "builder-dataset-for-pretrain",
        lambda c: builder_cfg(c, {"builder": "pretrain", "inputs": [{"dataset": "datasets/facts"}]}),
        "is read by the chat builders",
    ),
    Case(
        "builder-output-escapes",
        lambda c: builder_cfg(c, {"inputs": [{"path": rows_file(c, "r.jsonl", [GOOD_ROW])}], "output": "../outside"}),
        "would leave the store",
    ),
    Case(
        "builder-empty-input",
        lambda c: builder_cfg(c, {"inputs": [{"path": rows_file(c, "r.jsonl", [])}]}),
        "r.jsonl: no rows (empty input)",
    ),
    Case(
        "builder-not-utf8",
        lambda c: builder_cfg(
            c,
            {
                "inputs": [
                    {"path": rows_file(c, "r.jsonl", [], json.dumps(GOOD_ROW).encode() + b'\n{"messages": "\xff"}\n')}
                ]
            },
        ),
        "r.jsonl",
    ),
    Case(
        "builder-bad-json",
        lambda c: builder_cfg(
            c, {"inputs": [{"path": rows_file(c, "r.jsonl", [], (json.dumps(GOOD_ROW) + "\n{bad\n").encode())}]}
        ),
        "r.jsonl:2",
    ),
    Case(
        "builder-null-response",
        lambda c: builder_cfg(
            c, {"inputs": [{"path": rows_file(c, "r.jsonl", [GOOD_ROW, {"prompt": "p", "response": None}])}]}
        ),
        "r.jsonl:2",
    ),
    Case(
        "builder-row-without-text",
        lambda c: builder_cfg(c, {"inputs": [{"path": rows_file(c, "r.jsonl", [{"title": "x"}])}]}),
        "r.jsonl:1",
    ),
    Case("builder-unknown-target", lambda c: ["build_data.py", "rlhf", *common(c)], "rlhf"),
    # --- datasets: shards and manifests ---------------------------------------------------------------
    Case(
        "dataset-missing", lambda c: stage_sft(c, "--set", "sft.data.dataset=datasets/none"), "datasets/none not found"
    ),
    Case("dataset-swapped-shard", lambda c: stage_sft(c), "is corrupted", setup=tamper_dataset(swap_shard)),
    Case("dataset-truncated-shard", lambda c: stage_sft(c), "is corrupted", setup=tamper_dataset(truncate_shard)),
    Case("dataset-missing-shard", lambda c: stage_sft(c), "is missing", setup=tamper_dataset(drop_shard)),
    Case("dataset-miscounted-rows", lambda c: stage_sft(c), "rows add up to", setup=tamper_dataset(miscount_rows)),
    Case(
        "dataset-manifest-not-json",
        lambda c: stage_sft(c),
        "manifest.json: not valid JSON",
        setup=lambda c: (dataset_files(c) / "manifest.json").write_text("{oops"),
    ),
    Case(
        "dataset-incomplete",
        lambda c: stage_sft(c),
        "not found (or incompletely written)",
        setup=lambda c: (dataset_files(c) / "_COMPLETE.json").unlink(),
    ),
    # --- stores ---------------------------------------------------------------------------------------
    Case("store-is-a-file", lambda c: ["stage.py", "sft", "--store", str(write(c, "store-file", "x"))], "is a file"),
    Case(
        "store-unknown-scheme",
        lambda c: ["stage.py", "sft", "--store", "gs://bucket/x"],
        "only local directories and s3://",
    ),
    Case("card-store-mistyped", lambda c: ["card.py", "--store", str(c.tmp / "stor")], "does not exist"),
    Case(
        "promote-store-mistyped", lambda c: ["promote.py", c.sft_run, "--store", str(c.tmp / "stor")], "does not exist"
    ),
    Case(
        "store-s3-no-credentials",
        lambda c: ["card.py", "--store", "s3://bucket/prefix"],
        "no AWS credentials",
        env={
            "AWS_ACCESS_KEY_ID": None,
            "AWS_SECRET_ACCESS_KEY": None,
            "AWS_PROFILE": None,
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
            "AWS_CONFIG_FILE": "/nonexistent",
            "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
            "AWS_EC2_METADATA_DISABLED": "true",
        },
    ),
    Case(
        "store-s3-unreachable",
        lambda c: ["card.py", "--store", "s3://bucket/prefix"],
        "cannot reach the S3 endpoint http://<redacted>@127.0.0.1:9",
        env={
            "AWS_ENDPOINT_URL": "http://user:hunter2@127.0.0.1:9",
            "AWS_ACCESS_KEY_ID": "a",
            "AWS_SECRET_ACCESS_KEY": "b",
        },
    ),
    Case("store-s3-no-bucket-name", lambda c: ["card.py", "--store", "s3://"], "no bucket name"),
    # --- promotion ------------------------------------------------------------------------------------
    Case(
        "promote-rewind",
        lambda c: ["promote.py", c.sft_run, *common(c)],
        "is already champion gate-test@v1-sft; latest is v2-surgical",
        setup=promote_surgical_by_hand,
    ),
    Case(
        "promote-forged-candidate",
        lambda c: [
            "promote.py",
            c.surgical_run,
            *common(c),
            "--candidate",
            f"../../../{c.sft_run}/sweep/checkpoint-120",
            "--reason",
            "x",
        ],
        "is not a candidate of",
    ),
    Case(
        "promote-input-model",
        lambda c: ["promote.py", c.surgical_run, *common(c), "--candidate", "input model", "--reason", "x"],
        "'input model' is not a candidate of",
    ),
    Case("promote-not-a-run-key", lambda c: ["promote.py", "runs/sft/../../etc", *common(c)], "is not a run key"),
    Case(
        "promote-url-as-run",
        lambda c: ["promote.py", "s3://bucket/runs/sft/sft-0123456789", *common(c)],
        "is not a run key",
    ),
    Case(
        "promote-run-missing",
        lambda c: ["promote.py", "runs/sft/sft-0123456789", *common(c)],
        "no sweep/selection.json",
    ),
    Case(
        "promote-candidate-missing",
        lambda c: ["promote.py", c.sft_run, *common(c), "--candidate", "checkpoint-999"],
        "'checkpoint-999' is not a candidate of",
    ),
    Case(
        "promote-gate-without-reason", lambda c: ["promote.py", c.surgical_run, *common(c)], "give --reason to promote"
    ),
    Case("promote-nothing-named", lambda c: ["promote.py", *common(c)], "name the run to promote"),
    Case(
        "rollback-unknown-version",
        lambda c: ["promote.py", "--rollback", "v9-sft", "--reason", "x", *common(c)],
        "champion gate-test@v9-sft not found",
    ),
    Case(
        "rollback-to-latest",
        lambda c: ["promote.py", "--rollback", "v1-sft", "--reason", "x", *common(c)],
        "already the line's latest",
    ),
    Case("rollback-without-reason", lambda c: ["promote.py", "--rollback", "v1-sft", *common(c)], "takes --reason"),
    Case(
        "rollback-path",
        lambda c: ["promote.py", "--rollback", "../../runs/sft", "--reason", "x", *common(c)],
        "not a version name",
    ),
    Case(
        "rollback-with-run",
        lambda c: ["promote.py", c.sft_run, "--rollback", "v1-sft", "--reason", "x", *common(c)],
        "takes --reason and no run",
    ),
    Case("card-unknown-version", lambda c: ["card.py", "--version", "v9-sft", *common(c)], "v9-sft"),
    Case("card-version-path", lambda c: ["card.py", "--version", "../../runs", *common(c)], "not a version name"),
    Case("card-line-path", lambda c: ["card.py", "--line", "../runs", *common(c)], "not a line name"),
    Case("card-no-champion", lambda c: ["card.py", "--line", "other-line", *common(c)], "no champion promoted yet"),
    Case(
        "evaluate-tampered-champion-weights",
        lambda c: ["evaluate.py", f"champion:{LINE}", *common(c)],
        "model.safetensors: does not match the checksum",
        setup=lambda c: flip_bytes(c.store / "champions" / LINE / "v1-sft" / "model.safetensors"),
    ),
    Case(
        "evaluate-tampered-checkpoint-weights",
        lambda c: ["evaluate.py", c.sft_run, *common(c)],
        "model.safetensors: does not match the checksum",
        setup=lambda c: flip_bytes(next((c.store / c.sft_run / "checkpoints").glob("*/model.safetensors"))),
    ),
    *[
        Case(
            f"model-init-{how}",
            lambda c, how=how: stage_sft(c, "--set", f"sft.model.init={break_weights(model_dir(c, 'm'), how)}"),
            expect,
        )
        for how, expect in BROKEN_WEIGHTS.items()
    ],
    *[
        Case(
            f"evaluate-local-model-{how}",
            lambda c, how=how: ["evaluate.py", str(break_weights(model_dir(c, "m"), how)), *common(c)],
            expect,
        )
        for how, expect in BROKEN_WEIGHTS.items()
    ],
    *[
        Case(
            f"model-dry-run-{name}",
            lambda c, init=init: stage_sft(c, "--set", f"sft.model.init={init(c)}", "--dry-run"),
            expect,
        )
        for name, init, expect in (
            ("unknown-champion", lambda c: "champion:nope", "no champion promoted yet for line 'nope'"),
            ("unknown-version", lambda c: f"champion:{LINE}@v99-sft", "v99-sft"),
            ("store-key-outside", lambda c: "store:/etc", "not found"),
            ("a-file", lambda c: str(write(c, "model.txt", "x")), "no such directory"),
            (
                "bin-only",
                lambda c: str(model_dir(c, "m", drop=("model.safetensors",), files={"pytorch_model.bin": "x"})),
                "no *.safetensors weights",
            ),
            ("hub-offline", lambda c: "hf:nobody/not-cached", "not in the local Hugging Face cache"),
            ("s3-credentials", lambda c: "s3://KEY:hunter2@bucket/m", "credentials in an s3:// URL"),
        )
    ],
    *[
        Case(
            f"set-cannot-train-{key}-{value}",
            lambda c, k=key, v=value: stage_sft(c, "--set", f"sft.train.{k}={v}"),
            expect,
        )
        for key, value, expect in (
            ("lr", "inf", "lr"),
            ("weight_decay", ".inf", "weight_decay"),
            ("max_grad_norm", ".nan", "max_grad_norm"),
            ("grad_accum", "1000000000", "grad_accum"),
            ("max_steps", "1000000000000", "max_steps"),
            ("max_steps", "0", "max_steps: 0 trains nothing"),
        )
    ],
    *[
        Case(f"set-cannot-run-here-{name}", lambda c, o=override: stage_sft(c, "--set", o), expect)
        for name, override, expect in (
            ("workers", "cluster.workers=1000", "could never place them"),
            ("fp16-on-cpu", "sft.train.precision=fp16", "needs GPU workers"),
            ("bf16-on-cpu", "sft.train.precision=bf16", "needs GPU workers"),
            ("flash-attention-on-cpu", "sft.train.attn_implementation=flash_attention_2", "needs GPU workers"),
            ("fsdp-beside-deepspeed", "sft.train.extra={fsdp: full_shard}", "FSDP beside it is refused"),
            ("resume-from-checkpoint", "sft.train.extra={resume_from_checkpoint: x}", "resuming is the engine's"),
        )
    ],
    *[
        Case(f"set-sweep-limit-{value}", lambda c, v=value: stage_sft(c, "--set", f"sweep.limit={v}"), "sweep.limit")
        for value in ("-3", "0", "true")
    ],
    Case(
        "card-tampered-champion-weights",
        lambda c: ["card.py", *common(c)],
        "model.safetensors: does not match the checksum",
        setup=lambda c: flip_bytes(c.store / "champions" / LINE / "v1-sft" / "model.safetensors"),
    ),
    Case(
        "card-edited-champion-readme",
        lambda c: ["card.py", *common(c)],
        "README.md: does not match the checksum",
        setup=lambda c: (c.store / "champions" / LINE / "v1-sft" / "README.md").write_text("hand-written\n"),
    ),
    Case(
        "promote-tampered-candidate-weights",
        lambda c: ["promote.py", c.surgical_run, "--reason", "r", *common(c)],
        "model.safetensors: does not match the checksum",
        setup=lambda c: [flip_bytes(p) for p in (c.store / c.surgical_run / "checkpoints").glob("*/model.safetensors")],
    ),
    Case(
        "stage-init-tampered-champion-weights",
        lambda c: stage_sft(c, "--set", f"sft.model.init=champion:{LINE}"),
        "model.safetensors: does not match the checksum",
        setup=lambda c: flip_bytes(c.store / "champions" / LINE / "v1-sft" / "model.safetensors"),
    ),
    Case(
        "evaluate-dry-run-truncated-latest",
        lambda c: ["evaluate.py", f"champion:{LINE}", *common(c), "--dry-run"],
        "not valid JSON",
        setup=lambda c: (c.store / "champions" / LINE / "latest.json").write_text('{"line": "gate'),
    ),
    Case(
        "evaluate-nan-checkpoint-of-a-run",
        lambda c: ["evaluate.py", c.sft_run, *common(c)],
        "NaN or infinite value(s)",
        setup=nan_checkpoint_in_store,
    ),
    Case(
        "card-out-inside-the-store",
        lambda c: ["card.py", "--out", str(c.store / "champions" / LINE / "v1-sft" / "README.md"), *common(c)],
        "inside the store",
    ),
    Case(
        "card-out-existing-file",
        lambda c: ["card.py", "--out", str(write(c, "card.md", "mine")), *common(c)],
        "exists; give --force",
    ),
    Case(
        "latest-extra-key",
        lambda c: ["card.py", *common(c)],
        "latest.json: not a valid ChampionPointer: colour",
        setup=lambda c: edit_latest(c, colour="red"),
    ),
    Case(
        "rollback-latest-extra-key",
        lambda c: ["promote.py", "--rollback", "v1-sft", "--reason", "x", *common(c)],
        "latest.json: not a valid ChampionPointer",
        setup=lambda c: edit_latest(c, colour="red"),
    ),
    Case(
        "latest-key-and-version-disagree",
        lambda c: ["card.py", *common(c)],
        "disagree",
        setup=lambda c: edit_latest(c, version="v9-sft"),
    ),
    # --- smaller ones: what a clumsy hand or a strange file does (24.10) ---------------------------------
    Case(
        "pipeline-duplicate-key",
        lambda c: ["pipeline.py", "--pipeline", str(write(c, "p.yaml", "line: a\nline: b\n")), "--store", str(c.store)],
        "at line 2, column 1: key 'line' is given twice",
    ),
    Case(
        "pipeline-nested-too-deep",
        lambda c: ["pipeline.py", "--pipeline", str(write(c, "p.yaml", "[" * 100_000)), "--store", str(c.store)],
        "nested too deeply",
    ),
    Case(
        "pipeline-is-a-directory",
        lambda c: ["pipeline.py", "--pipeline", str(c.tmp), "--store", str(c.store)],
        "is a directory, not a config file",
    ),
    Case(
        "set-line-of-5-mb",
        lambda c: ["card.py", *common(c), "--set", "line=" + "a" * 5_000_000],
        "at most 100 characters",
    ),
    *[
        Case(
            f"bench-{name}-never-passes",
            lambda c, f=fmt, t=truth: [
                "pipeline.py",
                *common(c),
                *bench_file(c, json.dumps({"id": "a", "category": "c", "prompt": "p?", "truth": t, "format": f})),
            ],
            expect,
        )
        for name, fmt, truth, expect in (
            ("yes-no", {"type": "yes_no"}, ["maybe"], "a yes_no item's `truth` is"),
            ("letter", {"type": "letter"}, ["BB"], "a letter item's `truth` holds single letters"),
            ("number", {"type": "number"}, ["abc"], "a number item's `truth` holds numbers"),
        )
    ],
    Case(
        "builder-text-named-parquet",
        lambda c: builder_cfg(c, {"inputs": [{"path": str(write(c, "rows.parquet", "not parquet\n"))}]}),
        "rows.parquet: not a Parquet file",
    ),
    Case(
        "builder-infinite-weight",
        lambda c: builder_cfg(c, {"inputs": [{"path": rows_file(c, "r.jsonl", [GOOD_ROW]), "weight": float("inf")}]}),
        "weight",
    ),
    Case(
        "builder-mixed-layouts",
        lambda c: builder_cfg(
            c, {"inputs": [{"path": rows_file(c, "r.jsonl", [GOOD_ROW, {"instruction": "Hi?", "output": "Hello."}])}]}
        ),
        "r.jsonl:2: this row is laid out as alpaca (instruction, output), the rows before it as messages",
    ),
    Case(
        "builder-config-is-a-directory",
        lambda c: ["build_data.py", str(c.tmp), *common(c)],
        "is a directory, not a config file",
    ),
    Case("store-s3-dot-dot", lambda c: ["card.py", "--store", "s3://bucket/../x"], "no '.' or '..' segments"),
    Case(
        "promote-empty-candidate",
        lambda c: ["promote.py", c.surgical_run, "--candidate", "", "--reason", "r", *common(c)],
        "--candidate is empty",
    ),
    Case(
        "rollback-empty-reason",
        lambda c: ["promote.py", "--rollback", "v1-sft", "--reason", " ", *common(c)],
        "--reason is empty",
    ),
    Case(
        "model-champion-stage-and-version",
        lambda c: stage_sft(c, "--set", f"sft.model.init=champion:{LINE}:sft@v1-sft"),
        "give a stage or a version, not both",
    ),
    Case(
        "model-champion-empty-version",
        lambda c: stage_sft(c, "--set", f"sft.model.init=champion:{LINE}@"),
        "a part of the reference is empty",
    ),
    # --- evaluate -------------------------------------------------------------------------------------
    Case(
        "evaluate-missing-model", lambda c: ["evaluate.py", str(c.tmp / "gone"), *common(c)], lambda c: f"{c.tmp}/gone"
    ),
    Case("evaluate-missing-run", lambda c: ["evaluate.py", "runs/sft/sft-0123456789", *common(c)], "sft-0123456789"),
    Case("evaluate-report-name", lambda c: ["evaluate.py", str(c.start), "--name", "../x", *common(c)], "--name"),
    Case(
        "evaluate-merge-without-select",
        lambda c: ["evaluate.py", str(c.start), "--merge", *common(c)],
        "--merge merges the selected champion",
    ),
    Case(
        "evaluate-unknown-extra-task",
        lambda c: ["evaluate.py", str(c.start), *common(c), "--set", "sweep.extra_tasks=[no_such_task]"],
        "unknown lm-eval task 'no_such_task'",
    ),
]


def run_entry(argv: list[str]) -> int:
    """A launcher's __main__ with this argv, as `python launch/<argv[0]> ...` runs it; returns the exit status."""
    old = sys.argv
    sys.argv = [str(LAUNCH / argv[0]), *argv[1:]]
    try:
        runpy.run_path(str(LAUNCH / argv[0]), run_name="__main__")
        return 0
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = old


@pytest.fixture
def ctx(gated_line, tmp_path, monkeypatch):
    import ray

    from slm import cluster, layout

    def no_ray(*args, **kwargs):
        raise AssertionError("a Ray cluster was started: the bad input was not caught before launch")

    monkeypatch.setattr(cluster, "connect", no_ray)
    monkeypatch.setattr(ray, "init", no_ray)
    monkeypatch.setenv("SLM_CACHE", str(tmp_path / "cache"))
    monkeypatch.syspath_prepend(str(LAUNCH))
    store = tmp_path / "store"
    shutil.copytree(gated_line["pristine"], store)
    (sft_run,) = [layout.run_prefix("sft", p.name) for p in (store / "runs/sft").iterdir()]
    (surgical_run,) = [layout.run_prefix("surgical", p.name) for p in (store / "runs/surgical").iterdir()]
    return SimpleNamespace(
        store=store,
        tmp=tmp_path / "work",
        line_root=gated_line["root"],
        sft_run=sft_run,
        surgical_run=surgical_run,
        start=gated_line["start"],
    )


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_exit_2_and_the_store_is_untouched(case, ctx, capsys, monkeypatch):
    ctx.tmp.mkdir()
    for key, value in case.env.items():
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value)
    if case.setup:
        case.setup(ctx)
    argv = case.argv(ctx)
    capsys.readouterr()
    before = tree_digest(ctx.store)
    code = run_entry(argv)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2, (code, err[-3000:])
    assert "Traceback" not in err, err[-3000:]
    assert len(errors) == 1, err[-3000:]
    assert len(errors[0]) <= 2100, f"an error line of {len(errors[0]):,} characters"
    expect = case.expect(ctx) if callable(case.expect) else case.expect
    assert expect in errors[0], errors[0]
    assert tree_digest(ctx.store) == before, "the store changed"
    for secret in ("hunter2",):
        assert secret not in err


def test_the_suite_covers_every_family_with_at_least_80_cases():
    families = {c.id.split("-")[0] for c in CASES}
    assert len(CASES) >= 80 and len({c.id for c in CASES}) == len(CASES)
    assert {
        "pipeline",
        "bench",
        "set",
        "ds",
        "stage",
        "model",
        "builder",
        "dataset",
        "store",
        "promote",
        "rollback",
        "card",
        "evaluate",
    } <= families


def test_dry_runs_on_a_trained_store_say_what_would_happen_and_change_nothing(ctx, capsys):
    """The stage, the promotion the gate refused, and a rollback, each with --dry-run on a real line:
    exit 0, what would happen, no Ray (the fixture fails the test on a start), the store unchanged."""
    ctx.tmp.mkdir()
    before = tree_digest(ctx.store)
    capsys.readouterr()
    # as the line's surgical run was made: from the line's champion, on its facts dataset
    made_as = ["--set", f"model.init=champion:{LINE}", "--set", "data.dataset=datasets/facts"]
    assert run_entry(["stage.py", "surgical", *common(ctx), *made_as, "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert "[surgical]" in plan and f"as {LINE}@v2-surgical" in plan
    assert run_entry(["promote.py", ctx.surgical_run, *common(ctx), "--reason", "r", "--dry-run"]) == 0
    assert capsys.readouterr().out.startswith("would promote checkpoint-")
    # a dry rollback makes every check the real one does: v1-sft is already the latest
    assert run_entry(["promote.py", "--rollback", "v1-sft", "--reason", "r", *common(ctx), "--dry-run"]) == 2
    assert "is already the line's latest" in capsys.readouterr().err
    assert tree_digest(ctx.store) == before, "a dry run changed the store"
