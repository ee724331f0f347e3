"""Checks on a stage's starting weights: fail fast on mismatches, warn when the numbers look wrong."""

from __future__ import annotations

import math

from slm.errors import UserError

# A pretrained init should start far below the loss of uniform guessing, ln(vocab); above this
# fraction of it, the weights most likely did not load (random init, wrong tokenizer, bad file).
LOADED_LOSS_FRACTION = 0.8
CHINCHILLA_TOKENS_PER_PARAMETER = 20


def check_architecture(expected: dict, actual: dict, where: str) -> None:
    """Every field the stage config states must match the checkpoint's config.json."""
    diffs = [
        f"{k}: config says {v!r}, checkpoint has {actual.get(k)!r}" for k, v in expected.items() if actual.get(k) != v
    ]
    if diffs:
        raise UserError(f"{where}: architecture mismatch ({'; '.join(diffs)})")


def check_vocab(model_vocab: int, tokenizer_len: int, where: str) -> None:
    if tokenizer_len > model_vocab:
        raise UserError(f"{where}: tokenizer has {tokenizer_len} tokens but the model's vocab_size is {model_vocab}")


def check_tied(model, where: str) -> bool:
    """A config that ties embeddings must load with one shared tensor (not two copies)."""
    tied = model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    if getattr(model.config, "tie_word_embeddings", False) and not tied:
        raise UserError(f"{where}: config ties input and output embeddings but they loaded as separate tensors")
    return tied


def init_loss_warning(first_loss: float | None, vocab_size: int, init_spec: str) -> str | None:
    if first_loss is None or init_spec == "scratch":
        return None
    random_loss = math.log(vocab_size)
    if first_loss > LOADED_LOSS_FRACTION * random_loss:
        return (
            f"step-0 loss {first_loss:.3f} of the pretrained init {init_spec} is not far below a random "
            f"init's ln({vocab_size}) = {random_loss:.3f}: the weights may not have loaded (or the model "
            f"knows little of this data)"
        )
    return None


def count_parameters(config) -> int:
    """Parameters of a model built from a config, without allocating its weights."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def tokens_per_parameter_warning(planned_tokens: int, parameters: int) -> str | None:
    ratio = planned_tokens / max(parameters, 1)
    if ratio < CHINCHILLA_TOKENS_PER_PARAMETER / 10:
        return (
            f"pretraining plans {planned_tokens:,} tokens for {parameters:,} parameters ({ratio:.2f} tokens "
            f"per parameter), far below the ~{CHINCHILLA_TOKENS_PER_PARAMETER} of compute-optimal training"
        )
    return None
