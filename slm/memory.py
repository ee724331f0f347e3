"""How much device memory one worker needs for a stage, estimated before anything is loaded.

Model states (16-bit weights, gradients, fp32 master weights and Adam moments) by DeepSpeed's own
ZeRO-2 estimator's count, the ZeRO paper's for the other stages. Activations by the count of
Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models", eq. 2, one
GPU, no tensor parallelism): 34·s·b·h bytes per layer at 16 bits, plus 5·a·s²·b for the attention
scores when the attention implementation materialises them (eager); with gradient checkpointing only
each layer's input (2·s·b·h) is kept, plus one layer recomputed. The logits: 16-bit logits, their fp32
copy for the loss and its gradient, 10·b·s·V bytes. An estimate, stated as one: allocator
fragmentation, communication buckets and the CUDA context come on top (DeepSpeed's buffer factor).
"""

from __future__ import annotations

from dataclasses import dataclass

GB = 1e9


@dataclass(frozen=True)
class Shape:
    parameters: int
    layers: int
    hidden: int
    heads: int
    vocab: int

    @classmethod
    def of(cls, config, parameters: int) -> Shape:
        get = lambda *names: next(getattr(config, n) for n in names if getattr(config, n, None))  # noqa: E731
        return cls(
            parameters=parameters,
            layers=get("num_hidden_layers", "n_layer"),
            hidden=get("hidden_size", "n_embd"),
            heads=get("num_attention_heads", "n_head"),
            vocab=config.vocab_size,
        )


@dataclass(frozen=True)
class Estimate:
    model_states: float  # bytes per worker
    activations: float
    logits: float

    @property
    def total(self) -> float:
        return self.model_states + self.activations + self.logits

    def describe(self) -> str:
        return (
            f"~{size(self.total)} per worker (model states {size(self.model_states)}, activations "
            f"{size(self.activations)}, logits {size(self.logits)})"
        )


def size(n: float) -> str:
    return f"{n / GB:.1f} GB" if n >= 0.1 * GB else f"{n / 1e6:.1f} MB"


def count(parameters: int) -> str:
    return f"{parameters / 1e9:.2f}B" if parameters >= 1e9 else f"{parameters / 1e6:.1f}M"


def model_states(parameters: int, zero_stage: int, workers: int, offload_optimizer: bool, precision: str) -> float:
    if precision == "fp32":  # fp32 weights and gradients, no separate master copy: 4 + 4 + 8 (Adam)
        weights, grads, optimizer = 4 * parameters, 4 * parameters, 8 * parameters
    else:  # mixed precision: 16-bit weights and gradients; fp32 master weights, momentum, variance
        weights, grads, optimizer = 2 * parameters, 2 * parameters, 12 * parameters
    if zero_stage == 2 and precision != "fp32":
        # DeepSpeed's estimate_zero2_model_states_mem_needs, written out (importing DeepSpeed in a dry run
        # costs seconds and an accelerator warning; tests/slm/test_memory.py checks it against the original):
        # 16-bit weights on every worker; 16- and 32-bit gradients, fp32 weights and Adam moments, 18 bytes
        # a parameter, split over the workers (all on the CPU with the optimizer offloaded)
        return float(2 * parameters + (0 if offload_optimizer else int(18 * parameters / workers)))
    if offload_optimizer:
        optimizer = 0
    if zero_stage >= 1:
        optimizer /= workers
    if zero_stage >= 2:
        grads /= workers
    if zero_stage >= 3:
        weights /= workers
    return float(weights + grads + optimizer)


def estimate(
    shape: Shape,
    micro_batch: int,
    seq_len: int,
    workers: int,
    zero_stage: int,
    precision: str,
    offload_optimizer: bool = False,
    gradient_checkpointing: bool = False,
    scores_materialised: bool = False,
) -> Estimate:
    s, b, h, a, L = seq_len, micro_batch, shape.hidden, shape.heads, shape.layers
    width = 4 if precision == "fp32" else 2  # bytes of an activation
    per_layer = 17 * width * s * b * h + (5 * a * s * s * b * width / 2 if scores_materialised else 0)
    activations = (L * 2 * s * b * h * width / 2 + per_layer) if gradient_checkpointing else L * per_layer
    logits = (width + 4 + 4) * b * s * shape.vocab
    states = model_states(shape.parameters, zero_stage, workers, offload_optimizer, precision)
    return Estimate(model_states=states, activations=float(activations), logits=float(logits))
