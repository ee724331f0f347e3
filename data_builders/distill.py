"""Distillation: the teacher answers a question set (greedy), and those answers become chat examples.

Questions are deduplicated and decontaminated first (no teacher time on a leaked MMLU question).
The teacher then answers them shard by shard: in this process (`teacher_workers: 0`, the default),
or in `teacher_workers` Ray tasks in parallel, each on a GPU in bf16 with `teacher_gpu: true`.
Every finished shard's answers are kept in the store, so an interrupted build resumes where it
stopped; the log gives rows/s and an ETA as shards finish.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from slm import layout
from slm.chat import prompt_text
from slm.data_builders.common import Spool, collect, mix, split_and_write
from slm.errors import UserError
from slm.log import log
from slm.modeling import load_model, load_tokenizer, resolve_ref
from slm.refs import ModelRef

VERSION = "2"  # 2: any source kind; questions deduplicated and decontaminated; sharded, resumable generation
SHARD_QUESTIONS = 256


def generate(model, tokenizer, questions: list[str], max_new_tokens: int, batch_size: int = 16) -> list[str]:
    import torch

    tokenizer.padding_side = "left"  # decoder-only generation pads on the left
    if tokenizer.pad_token is None:  # a teacher with no pad (Llama-3): padded rows are masked, eos serves
        tokenizer.pad_token = tokenizer.eos_token
    answers = []
    with torch.no_grad():
        for i in range(0, len(questions), batch_size):
            prompts = [prompt_text(tokenizer, q) for q in questions[i : i + batch_size]]
            batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            out = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            answers += [
                tokenizer.decode(o[batch["input_ids"].shape[1] :], skip_special_tokens=True).strip() for o in out
            ]
    return answers


class Teacher:
    """The teacher model, loaded once per process (the driver, or each Ray task's worker)."""

    def __init__(self, path: str, gpu: bool, dtype: str, batch_size: int):
        import torch

        device = "cuda" if gpu and torch.cuda.is_available() else "cpu"
        chosen = {
            "auto": torch.bfloat16 if device == "cuda" else torch.float32,
            "float32": torch.float32,
            "bfloat16": torch.bfloat16,
            "float16": torch.float16,
        }[dtype]
        self.tokenizer = load_tokenizer(Path(path))
        self.model = load_model(Path(path), dtype=chosen).to(device).eval()
        self.batch_size, self.device, self.dtype = batch_size, device, str(chosen).replace("torch.", "")

    def answer(self, questions: list[str], max_new_tokens: int) -> list[str]:
        return generate(self.model, self.tokenizer, questions, max_new_tokens, self.batch_size)


def answer_shards(cfg, store, ref: ModelRef, shards: list[list[str]], work: str) -> list[list[str]]:
    """Every shard answered, the finished ones read back from `work` in the store."""
    done = {
        i: store.read_json(layout.teacher_shard(work, i))["answers"]
        for i in range(len(shards))
        if store.exists(layout.teacher_shard(work, i))
    }
    todo = [i for i in range(len(shards)) if i not in done]
    if done:
        log(f"[data] teacher: {len(done)} of {len(shards)} shards already answered; resuming")
    total, answered, start = sum(len(shards[i]) for i in todo), 0, time.time()

    def finished(i: int, answers: list[str]) -> None:
        nonlocal answered
        store.write_json(layout.teacher_shard(work, i), {"answers": answers})
        done[i] = answers
        answered += len(answers)
        rate = answered / max(time.time() - start, 1e-9)
        log(
            f"[data] teacher: {len(done)}/{len(shards)} shards, {answered:,}/{total:,} questions "
            f"({rate:,.1f} rows/s, ETA {(total - answered) / max(rate, 1e-9):,.0f}s)"
        )

    if todo and cfg.teacher_workers == 0:
        teacher = Teacher(str(ref.materialize()), cfg.teacher_gpu, cfg.teacher_dtype, cfg.teacher_batch_size)
        log(f"[data] teacher {cfg.teacher} on {teacher.device} ({teacher.dtype}), in this process")
        for i in todo:
            finished(i, teacher.answer(shards[i], cfg.max_new_tokens))
    elif todo:
        import ray

        from slm import cluster

        cluster.connect()

        @ray.remote(num_gpus=1 if cfg.teacher_gpu else 0, num_cpus=1)
        class TeacherActor:
            def __init__(self, ref_, gpu, dtype, batch_size):
                self.teacher = Teacher(str(ref_.materialize()), gpu, dtype, batch_size)

            def answer(self, i, questions, max_new_tokens):
                return i, self.teacher.answer(questions, max_new_tokens)

        actors = [
            TeacherActor.remote(ref, cfg.teacher_gpu, cfg.teacher_dtype, cfg.teacher_batch_size)
            for _ in range(min(cfg.teacher_workers, len(todo)))
        ]
        log(
            f"[data] teacher {cfg.teacher}: {len(todo)} shards on {len(actors)} Ray actors "
            f"({'GPU' if cfg.teacher_gpu else 'CPU'})"
        )
        pending = {}
        queue = list(todo)
        for actor in actors:
            if queue:
                i = queue.pop(0)
                pending[actor.answer.remote(i, shards[i], cfg.max_new_tokens)] = actor
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            actor = pending.pop(ready[0])
            i, answers = ray.get(ready[0])
            finished(i, answers)
            if queue:
                j = queue.pop(0)
                pending[actor.answer.remote(j, shards[j], cfg.max_new_tokens)] = actor
        for actor in actors:
            ray.kill(actor)
    return [done[i] for i in range(len(shards))]


def questions(source):
    """A question per row: `question`, `prompt` or `instruction`, or a conversation's first user turn
    (`messages`, or ShareGPT `conversations`); the input's `field` and `columns` apply first."""
    for row in source.shaped_rows():
        data = row.data
        q = next((data[k] for k in ("question", "prompt", "instruction") if isinstance(data.get(k), str)), None)
        if q is None and isinstance(data.get("messages"), list):
            q = next(
                (m.get("content") for m in data["messages"] if isinstance(m, dict) and m.get("role") == "user"),
                None,
            )
        if q is None and isinstance(data.get("conversations"), list):
            q = next(
                (t.get("value") for t in data["conversations"] if isinstance(t, dict) and t.get("from") == "human"),
                None,
            )
        if not isinstance(q, str) or not q.strip():
            raise UserError(
                f"{row.where}: needs a non-empty `question` (or `prompt` / `instruction`, or `messages` / "
                f"`conversations` with a user turn; `columns:` renames a source's own)"
            )
        yield row.where, {"question": q.strip()}


def build(cfg, store, digest, evals=None, config_path=""):
    if not cfg.teacher:
        raise UserError("distill builder: set teacher (a model reference)")
    ref = resolve_ref(cfg.teacher, store, what="teacher")
    with tempfile.TemporaryDirectory(prefix="slm-build-") as tmp:
        table, keep, sources, report = collect(cfg, store, evals, config_path, Path(tmp), reader=questions)
        ranges = report.pop("ranges")
        kept = np.nonzero(keep)[0]
        texts = table.take(kept).column("question").to_pylist()
        shards = [texts[i : i + SHARD_QUESTIONS] for i in range(0, len(texts), SHARD_QUESTIONS)]
        work = layout.teacher_work(cfg.output, digest)
        answers = [a for shard in answer_shards(cfg, store, ref, shards, work) for a in shard]
        by_row = dict(zip(kept.tolist(), answers))
        silent = [i for i, a in by_row.items() if not a]
        for i in silent:  # the teacher said nothing: no example to learn from
            keep[i] = False
        if silent:
            log(f"[data] teacher: {len(silent)} of {len(by_row)} answers empty; those questions are left out")
        examples = Spool(Path(tmp) / "examples.arrow")  # every row again, in order, now with its answer
        row = 0
        for batch in table.batches():
            for q, source, where in zip(*(batch.column(c).to_pylist() for c in ("question", "source", "_where"))):
                examples.append(
                    {
                        "messages": [
                            {"role": "user", "content": q},
                            {"role": "assistant", "content": by_row.get(row) or ""},
                        ],
                        "source": source,
                        "_where": where,
                    }
                )
                row += 1
        rows = examples.reader()
        for info, (start, end) in zip(sources, ranges):
            info.update(questions=end - start, answered=int(keep[start:end].sum()))
        order = mix(cfg, keep, ranges, sources, np.random.default_rng(cfg.seed))
        teacher = {
            "spec": cfg.teacher,
            "resolved": ref.provenance,
            "max_new_tokens": cfg.max_new_tokens,
            "decoding": "greedy",
            "empty_answers": len(silent),
            "workers": cfg.teacher_workers,
            "gpu": cfg.teacher_gpu,
            "dtype": cfg.teacher_dtype,
        }
        manifest = split_and_write(
            cfg, store, rows, order, sources, VERSION, digest, extra={"teacher": teacher, "hygiene": report}
        )
    store.delete_prefix(work)  # the dataset holds the answers now
    return manifest
