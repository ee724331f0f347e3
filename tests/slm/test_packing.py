"""train.packing: a packed, padding-free batch gives every example the loss and the gradients it has
alone (GPT-2, Llama and Qwen2 shapes; sdpa and eager), so no attention crosses examples and no example
predicts the next one's first token; pretraining blocks split at their documents' eos."""

import pytest
import torch
from datasets import Dataset

from slm.errors import UserError
from slm.packing import document_lengths, forward_inputs, pack_examples, packed_collator, packing_stats, resolve_packing
from tests.slm.test_losses import VOCAB, grads, tiny


class Pad:
    pad_token_id = 0


def conversations():
    """Seven examples of 5–23 tokens with their prompts masked, as the chat encoder leaves them."""
    g = torch.Generator().manual_seed(3)
    rows = []
    for length, prompt in [(23, 9), (5, 2), (17, 6), (11, 4), (8, 3), (14, 8), (6, 1)]:
        ids = torch.randint(1, VOCAB, (length,), generator=g).tolist()
        rows.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return rows


def alone(model, row) -> torch.Tensor:
    """The sum of an example's token losses, run by itself (the reference)."""
    ids = torch.tensor([row["input_ids"]])
    labels = torch.tensor([row["labels"]])
    logits = model(input_ids=ids).logits[0, :-1].float()
    return torch.nn.functional.cross_entropy(logits, labels[0, 1:], ignore_index=-100, reduction="sum")


def packed_losses(model, batch) -> dict[tuple, torch.Tensor]:
    """Each segment's sum of token losses from one forward pass of a packed batch, by its token ids."""
    logits = model(**forward_inputs(batch)).logits[:, :-1].float()
    labels = batch["labels"][:, 1:]
    token = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")
    out = {}
    for row in range(batch["input_ids"].shape[0]):
        starts = (batch["position_ids"][row] == 0).nonzero().flatten().tolist() + [batch["input_ids"].shape[1]]
        for a, b in zip(starts, starts[1:], strict=False):
            # a segment's tokens predict labels[a + 1 : b], i.e. shifted positions a .. b - 2
            out[tuple(batch["input_ids"][row, a:b].tolist())] = token[row, a : b - 1].sum()
    return out


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("model_type", ["gpt2", "llama", "qwen2"])
@pytest.mark.parametrize("flatten", [False, True], ids=["rows", "flattened"])
def test_each_example_keeps_its_own_loss_and_gradients_when_packed(model_type, attn, flatten):
    """Rows (PackedRows, sdpa/eager) and one flattened row (TRL's padding-free collator, what flash
    attention gets: on CPU transformers masks it from the same position ids)."""
    model = tiny(model_type)
    model.config._attn_implementation = attn
    rows = conversations()
    packed = pack_examples(Dataset.from_list(rows), 32, {})
    assert sorted(sum(packed["seq_lengths"], [])) == sorted(len(r["input_ids"]) for r in rows)
    assert max(sum(s) for s in packed["seq_lengths"]) <= 32
    assert len(packed) < len(rows)  # several examples share a row

    collate = packed_collator(Pad(), "flash_attention_2" if flatten else attn)
    batch = collate([packed[i] for i in range(len(packed))])
    assert "attention_mask" not in batch  # an attention mask would turn the per-segment masking off
    assert batch["input_ids"].shape[0] == (1 if flatten else len(packed))
    got = packed_losses(model, batch)
    got = {ids: got[ids] for ids in map(tuple, (r["input_ids"] for r in rows))}  # the padding is no example
    sum(got.values()).backward()
    packed_grads = grads(model)
    model.zero_grad()

    want = {tuple(r["input_ids"]): alone(model, r) for r in rows}
    sum(want.values()).backward()
    alone_grads = grads(model)
    # float64 weights, float32 logits: equal to float32 rounding: each loss to 1e-5 relative, each
    # gradient tensor to 1e-6 of its largest entry (a leak across examples moves the losses by 3e-3 to 0.17)
    for ids, w in want.items():
        assert torch.allclose(got[ids], w, rtol=1e-5), (float(got[ids]), float(w))
    assert set(packed_grads) == set(alone_grads)
    for name, w in alone_grads.items():
        worst = float((packed_grads[name] - w).abs().max())
        assert worst <= 1e-6 * float(w.abs().max()), (name, worst)


def test_the_stage_trainers_loss_on_a_packed_batch_is_the_examples_token_mean(tmp_path):
    """Through StageTrainer.compute_loss, as training calls it (the model's config keeps use_cache on,
    which would hide the packed mask)."""
    from transformers import TrainingArguments

    from slm.objectives import StageTrainer

    model = tiny("llama")
    assert model.config.use_cache
    rows = conversations()
    packed = pack_examples(Dataset.from_list(rows), 32, {})
    batch = packed_collator(Pad(), "sdpa")([packed[i] for i in range(len(packed))])
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    trainer = StageTrainer(model=model, args=args)
    loss = trainer.compute_loss(model, batch)
    supervised = sum(sum(label != -100 for label in r["labels"][1:]) for r in rows)
    want = sum(alone(model, r) for r in rows) / supervised
    assert torch.allclose(loss.float(), want.float(), rtol=1e-5), (float(loss), float(want))


def test_a_segments_first_label_is_dropped_and_positions_restart():
    rows = [{"input_ids": [5, 6, 7], "labels": [5, 6, 7]}, {"input_ids": [8, 9], "labels": [8, 9]}]
    packed = pack_examples(Dataset.from_list(rows), 8, {})
    flat = packed_collator(Pad(), "flash_attention_2")([packed[0]])
    assert flat["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    assert flat["labels"].tolist() == [[-100, 6, 7, -100, 9]]  # 7 never predicts 8
    assert flat["cu_seq_lens_q"].tolist() == [0, 3, 5]  # flash-attention's varlen boundaries
    rows = pack_examples(Dataset.from_list([*rows, {"input_ids": [3], "labels": [3]}]), 5, {})
    batch = packed_collator(Pad(), None)([rows[i] for i in range(len(rows))])
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9], [3, 0, 0, 0, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 0, 1, 2, 3]]  # the padding: its own segment
    assert batch["labels"].tolist() == [[-100, 6, 7, -100, 9], [-100] * 5]


def test_packing_stats_count_examples_and_fill():
    packed = pack_examples(Dataset.from_list(conversations()), 32, {})
    stats = packing_stats(packed, 32)
    assert stats["examples"] == 7 and stats["tokens"] == 84 and stats["rows"] == len(packed)
    assert stats["fill"] == round(84 / (32 * len(packed)), 4)


def test_pretraining_blocks_split_after_each_eos():
    assert document_lengths([4, 5, 2, 6, 2, 7, 8], eos=2) == [3, 2, 2]
    assert document_lengths([4, 5, 6], eos=2) == [3]
    assert document_lengths([2, 2], eos=2) == [1, 1]


def test_packing_resolves_by_the_models_masking():
    assert resolve_packing(None, "qwen2", False, "sft") == (True, None)
    assert resolve_packing(False, "llama", False, "sft") == (False, None)
    on, warning = resolve_packing(None, "gpt2", True, "sft")
    assert not on and "trust_remote_code" in warning
    with pytest.raises(UserError, match="sft: train.packing true is not supported for this model"):
        resolve_packing(True, "no_such_model", False, "sft")


def test_the_kl_anchors_last_k_tokens_count_within_each_packed_example():
    from slm.objectives import supervised_positions

    # one packed row: example A (positions 0-4, labels on its last 3), example B (0-3, labels on its last 2)
    labels = torch.tensor([[-100, -100, 7, 8, 9, -100, -100, 5, 6]])
    positions = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2, 3]])
    # shifted: mask[j] is label j + 1; the last 2 of each example are kept
    want = [False, False, True, True, False, False, True, True]
    assert supervised_positions(labels, 2, positions)[0].tolist() == want
    # without the positions the row is one sequence: only B's two survive
    assert supervised_positions(labels, 2)[0].tolist() == [False] * 6 + [True, True]
