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


def check_weights(path, where: str, finite: bool = True) -> None:
    """A model directory's safetensors hold what its config.json builds: readable headers, no tensor
    missing (tied ones excepted) or unexpected, the right shapes, and (finite) no NaN or inf anywhere.
    transformers would load such files with a warning and random or NaN weights, which then score as
    a model (a checkpoint missing a tensor scored MMLU 21.67%), so it is one line here, before Ray.
    Read from headers and one tensor at a time: no model is built, no second copy held."""
    import re
    from pathlib import Path

    import torch
    from safetensors import SafetensorError, safe_open
    from transformers import AutoConfig, AutoModelForCausalLM

    path = Path(path)
    found: dict[str, tuple[Path, tuple[int, ...]]] = {}
    for file in sorted(p for p in path.iterdir() if p.name.endswith(".safetensors")):
        try:
            with safe_open(str(file), "pt") as weights:
                for name in weights.keys():
                    found[name] = (file, tuple(weights.get_slice(name).get_shape()))
        except (SafetensorError, OSError, ValueError) as exc:
            raise UserError(f"{file}: not a readable safetensors file ({str(exc).splitlines()[0][:200]})") from None
    try:
        config = AutoConfig.from_pretrained(str(path))
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"{where} at {path}: config.json does not build a model ({str(exc).splitlines()[0]})") from None
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    tied = set(getattr(model, "all_tied_weights_keys", None) or {})
    ignore_missing = [re.compile(p) for p in getattr(model, "_keys_to_ignore_on_load_missing", None) or []]
    ignore_unexpected = [re.compile(p) for p in getattr(model, "_keys_to_ignore_on_load_unexpected", None) or []]
    missing = sorted(
        k for k in expected if k not in found and k not in tied and not any(p.search(k) for p in ignore_missing)
    )
    unexpected = sorted(k for k in found if k not in expected and not any(p.search(k) for p in ignore_unexpected))
    if missing or unexpected:
        parts = [f"{len(missing)} missing ({', '.join(missing[:3])})"] if missing else []
        parts += [f"{len(unexpected)} unexpected ({', '.join(unexpected[:3])})"] if unexpected else []
        raise UserError(
            f"{where} at {path}: weights do not match its config.json: tensors {'; '.join(parts)}; refusing to "
            f"load a model with random or dropped tensors"
        )
    wrong = [f"{k} {found[k][1]} vs {shape}" for k, shape in expected.items() if k in found and found[k][1] != shape]
    if wrong:
        raise UserError(f"{where} at {path}: tensor shapes differ from its config.json: {', '.join(wrong[:3])}")
    if finite:
        for file in sorted({file for file, _ in found.values()}):
            with safe_open(str(file), "pt") as weights:
                for name in weights.keys():
                    tensor = weights.get_tensor(name)
                    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                        bad = int((~torch.isfinite(tensor)).sum())
                        raise UserError(
                            f"{file}: tensor {name} holds {bad:,} NaN or infinite value(s) of {tensor.numel():,}"
                        )
