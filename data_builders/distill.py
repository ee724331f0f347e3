"""Distillation: the teacher answers a question set (greedy), and those answers become chat examples."""
import random

import torch

from data_builders.common import read_jsonl, split_and_write
from slm.chat import prompt_text
from slm.config import resolve_path
from slm.errors import UserError
from slm.modeling import load_model, load_tokenizer, materialize, resolve_ref
from slm.store import sha256_file

VERSION = "1"


@torch.no_grad()
def teacher_answers(model, tokenizer, questions: list[str], max_new_tokens: int, batch_size: int = 16) -> list[str]:
    tokenizer.padding_side = "left"  # decoder-only generation pads on the left
    if tokenizer.pad_token is None:  # a teacher with no pad (Llama-3): padded rows are masked, eos serves
        tokenizer.pad_token = tokenizer.eos_token
    answers = []
    for i in range(0, len(questions), batch_size):
        prompts = [prompt_text(tokenizer, q) for q in questions[i:i + batch_size]]
        batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        answers += [tokenizer.decode(o[batch["input_ids"].shape[1]:], skip_special_tokens=True).strip()
                    for o in out]
    return answers


def build(cfg, store, digest):
    if not cfg.teacher:
        raise UserError("distill builder: set teacher (a model reference)")
    ref = resolve_ref(cfg.teacher, store, what="teacher")
    path = materialize(ref)
    tokenizer, model = load_tokenizer(path), load_model(path)
    model.eval()
    rows, sources = [], []
    for item in cfg.inputs:
        questions = []
        for n, row in read_jsonl(item.path):
            if not isinstance(row.get("question"), str) or not row["question"].strip():
                raise UserError(f"{resolve_path(item.path)}:{n}: needs a non-empty `question`")
            questions.append(row["question"].strip())
        answers = teacher_answers(model, tokenizer, questions, cfg.max_new_tokens)
        kept = [(q, a) for q, a in zip(questions, answers) if a]
        rows += [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                  "source": item.name or "questions"} for q, a in kept]
        sources.append({"name": item.name or "questions", "path": item.path,
                        "sha256": sha256_file(resolve_path(item.path)), "questions": len(questions),
                        "answered": len(kept)})
    random.Random(cfg.seed).shuffle(rows)
    teacher = {"spec": cfg.teacher, "resolved": ref.get("champion") or ref.get("key") or ref.get("local") or ref.get("hf"),
               "max_new_tokens": cfg.max_new_tokens, "decoding": "greedy"}
    return split_and_write(cfg, store, rows, sources, VERSION, digest, extra={"teacher": teacher})
