"""Loss terms beyond next-token cross-entropy: a KL anchor to the starting model, and logit distillation.

Both are a KL divergence to a frozen model's next-token distribution on the supervised tokens, so
one Trainer subclass carries them. Neither HF Trainer nor TRL has a KL-to-reference term for plain
SFT (TRL's GKD trainer generates on-policy, which is a different method), hence this small module.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import Trainer

from slm.chat import IGNORE_INDEX
from slm.modeling import load_model
from slm.packing import forward_inputs
from slm.padding import fit_model_to_pad


@dataclass
class KLTerm:
    """loss = ce_weight · CE + weight(step) · T² · KL(frozen_T ‖ trained_T) on the selected tokens."""

    name: str  # "kl" (anchor) or "distill_kl"
    model: torch.nn.Module
    coef: float
    start_step: int = 0
    warmup_steps: int = 0
    last_k_tokens: int | None = None
    temperature: float = 1.0
    ce_weight: float = 1.0

    def weight(self, step: int) -> float:
        if step < self.start_step:
            return 0.0
        if self.warmup_steps <= 0:
            return self.coef
        return self.coef * min(1.0, (step - self.start_step + 1) / self.warmup_steps)


def supervised_positions(labels: torch.Tensor, last_k: int | None, position_ids: torch.Tensor | None = None):
    """Mask over shifted positions (logits[:, :-1] predict labels[:, 1:]); optionally only each example's
    last K (a packed row's examples are told apart by their restarting position ids)."""
    mask = labels[:, 1:] != IGNORE_INDEX
    if last_k is None:
        return mask
    from_the_end = mask.flip(1).cumsum(1).flip(1)  # 1 at the last supervised token, 2 before it, ...
    if position_ids is not None:  # count within each example: minus what the examples after it hold
        example = (position_ids[:, 1:] == 0).cumsum(1)
        after = torch.zeros_like(from_the_end)
        for row in range(mask.shape[0]):
            counts = torch.zeros(int(example[row].max()) + 2, dtype=from_the_end.dtype, device=mask.device)
            counts.index_add_(0, example[row], mask[row].to(from_the_end.dtype))
            later = counts.flip(0).cumsum(0).flip(0) - counts  # supervised tokens in the examples after each
            after[row] = later[example[row]]
        from_the_end = from_the_end - after
    return mask & (from_the_end <= last_k)


def token_kl(frozen_logits: torch.Tensor, logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(frozen ‖ trained) per position, in fp32, summed over the vocabulary."""
    target = F.log_softmax(frozen_logits.float() / temperature, dim=-1)
    current = F.log_softmax(logits.float() / temperature, dim=-1)
    return (target.exp() * (target - current)).sum(-1)


class StageTrainer(Trainer):
    """The HF Trainer plus optional KL terms; their values are logged beside the loss."""

    def __init__(self, *args, kl_terms: list[KLTerm] = (), loss: str = "standard", **kwargs):
        super().__init__(*args, **kwargs)
        self.kl_terms = list(kl_terms)
        self.loss_kind = loss  # train.loss: standard (the model's own), chunked or liger (slm/losses.py)
        for term in self.kl_terms:
            term.model.to(self.args.device).eval().requires_grad_(False)
        self._kl_sums = {t.name: [0.0, 0] for t in self.kl_terms}
        self._kl_weights = {t.name: 0.0 for t in self.kl_terms}  # the weight of the latest optimizer step

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = {**inputs, "use_cache": False}  # see slm.packing.forward_inputs: a cache hides the packed mask
        if self.loss_kind != "standard" and model.training:
            return self.projected_loss(model, inputs, return_outputs, num_items_in_batch)
        if not self.kl_terms or not model.training:  # eval_loss stays plain cross-entropy
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        loss, outputs = super().compute_loss(model, inputs, True, num_items_in_batch)
        step = self.state.global_step
        mask_full = supervised_positions(inputs["labels"], None)
        ce_weight = min(t.ce_weight for t in self.kl_terms)
        total = ce_weight * loss
        forward = forward_inputs(inputs)  # a packed batch's positions too
        for term in self.kl_terms:
            mask = supervised_positions(inputs["labels"], term.last_k_tokens, inputs.get("position_ids"))
            with torch.no_grad():
                frozen = term.model(**forward).logits
            kl = token_kl(frozen[:, :-1], outputs.logits[:, :-1], term.temperature)[mask]
            if kl.numel() == 0:
                continue
            mean_kl = kl.mean()
            scaled = mean_kl
            if num_items_in_batch is not None and self.model_accepts_loss_kwargs:
                # Scale like the cross-entropy: the model divides its token sum by num_items_in_batch
                # (tokens of the whole accumulated, possibly cross-device, batch) and the Trainer
                # multiplies by the process count; with every supervised token selected this
                # contributes the per-token mean over that batch.
                scaled = kl.sum() * (mask_full.sum() / mask.sum()).detach() / num_items_in_batch
                if self.args.average_tokens_across_devices:
                    scaled = scaled * self.accelerator.num_processes
            weight = self._kl_weights[term.name] = term.weight(step)
            if weight > 0:
                total = total + weight * term.temperature**2 * scaled.to(total.dtype)
            sums = self._kl_sums[term.name]
            sums[0] += float(mean_kl.detach())
            sums[1] += 1
        return (total, outputs) if return_outputs else total

    def projected_loss(self, model, inputs, return_outputs, num_items_in_batch):
        """The model's cross-entropy computed without its full logits, normalised and scaled exactly as
        Trainer.compute_loss does the model's own (tokens of the accumulated batch, across devices)."""
        from slm.losses import causal_lm_loss

        items = num_items_in_batch if self.model_accepts_loss_kwargs else None
        loss = causal_lm_loss(model, inputs, self.loss_kind, items)
        if self.args.average_tokens_across_devices and items is not None:
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        return (loss, None) if return_outputs else loss

    def log(self, logs: dict, *args, **kwargs) -> None:
        if "loss" in logs:
            for term in self.kl_terms:
                total, count = self._kl_sums[term.name]
                if count:
                    logs[term.name] = round(total / count, 6)
                    logs[f"{term.name}_weight"] = self._kl_weights[term.name]
                self._kl_sums[term.name] = [0.0, 0]
        super().log(logs, *args, **kwargs)


def kl_anchor_term(job) -> KLTerm:
    """KL(start model ‖ trained) per supervised token, against forgetting (the `kl_anchor` option)."""
    a = job.kl_anchor
    start = fit_model_to_pad(load_model(job.init.materialize(), job.trust_remote_code), job.pad)
    return KLTerm("kl", start, a.coef, a.start_step, a.warmup_steps, a.last_k_tokens)


def logit_distill_term(job) -> KLTerm:
    """T² · KL(teacher ‖ student) on the teacher's answers, weighted against cross-entropy (`logit_distill`)."""
    d = job.logit_distill
    return KLTerm(
        "distill_kl",
        load_model(d.teacher.materialize(), job.trust_remote_code),
        d.alpha,
        temperature=d.temperature,
        ce_weight=1.0 - d.alpha,
    )
