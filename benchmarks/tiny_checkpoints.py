"""Tiny random GPT-2 checkpoints (2 layers, hidden 64) sharing the project's tokenizer, like a run's saves."""

from __future__ import annotations

from pathlib import Path

from slm import REPO_ROOT


def tiny_tokenizer():
    """The project's tiny BPE (768 tokens), trained on the shipped pretraining fixtures."""
    from slm.data_builders.tokenizer import train_tokenizer

    fixtures = [REPO_ROOT / f"data_builders/fixtures/pretrain/{s}.txt" for s in ("encyclopedic", "educational", "web")]
    return train_tokenizer(fixtures, 768)


def make_checkpoints(root: Path, n: int) -> list[Path]:
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config

    tokenizer = tiny_tokenizer()
    paths = []
    for i in range(n):
        torch.manual_seed(i)
        config = GPT2Config(
            n_layer=2,
            n_embd=64,
            n_head=2,
            n_positions=1024,
            vocab_size=len(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        path = root / f"checkpoint-{(i + 1) * 100}"
        AutoModelForCausalLM.from_config(config).save_pretrained(path)
        tokenizer.save_pretrained(path)
        paths.append(path)
    return paths
