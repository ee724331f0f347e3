"""train.loss: chunked: the same loss and the same gradients as the model's own cross-entropy, without
the full-vocabulary logits (GPT-2, Llama and Qwen2 shapes, several chunks, padded rows, masked prompts)."""

import pytest
import torch

from slm.errors import UserError
from slm.losses import causal_lm_loss

VOCAB = 97


def tiny(model_type: str):
    from transformers import AutoConfig, AutoModelForCausalLM

    llama = {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 64,
    }
    shapes = {
        "gpt2": {"n_embd": 32, "n_layer": 2, "n_head": 2, "n_positions": 64},
        "llama": llama,
        "qwen2": {**llama, "tie_word_embeddings": True},  # Qwen2-0.5B ties its head to the embeddings
    }
    torch.manual_seed(0)
    config = AutoConfig.for_model(model_type, vocab_size=VOCAB, **shapes[model_type])
    # float64 weights, dropout off (two forward passes draw different dropout masks); both losses
    # take float32 logits, as transformers' ForCausalLMLoss does
    return AutoModelForCausalLM.from_config(config, attn_implementation="eager").double().eval()


def batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB, (3, 20), generator=g)
    mask = torch.ones_like(ids)
    mask[2, 14:] = 0  # a padded row
    labels = ids.clone()
    labels[:, :6] = -100  # the prompt is not supervised
    labels[mask == 0] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("model_type", ["gpt2", "llama", "qwen2"])
@pytest.mark.parametrize("num_items", [None, 29])
def test_chunked_loss_and_gradients_equal_the_models_own(model_type, num_items):
    model, inputs = tiny(model_type), batch()
    kwargs = {} if num_items is None else {"num_items_in_batch": torch.tensor(num_items)}
    reference = model(**inputs, **kwargs).loss
    reference.backward()
    want = grads(model)
    model.zero_grad()
    chunked = causal_lm_loss(model, inputs, "chunked", num_items, chunk_tokens=7)  # several chunks
    chunked.backward()
    got = grads(model)
    assert torch.allclose(chunked, reference, rtol=1e-6), (float(chunked), float(reference))
    assert set(got) == set(want)
    for name in want:  # float32 logits: equal to float32 rounding (tolerance 1e-5 relative)
        assert torch.allclose(got[name], want[name], rtol=1e-5, atol=1e-8), name


def test_a_head_that_is_not_a_plain_projection_is_refused():
    model = tiny("gpt2")
    model.config.final_logit_softcapping = 30.0
    with pytest.raises(UserError, match="final_logit_softcapping is not a plain projection"):
        causal_lm_loss(model, batch(), "chunked")


def test_a_loss_without_logits_is_refused_beside_terms_that_need_them():
    from slm.config import StageConfig, load_yaml_config
    from slm.engine import check_runnable

    anchored = {"train": {"loss": "chunked"}, "kl_anchor": {"coef": 0.1}}
    with pytest.raises(UserError, match="kl_anchor, logit_distill and dpo need the full logits"):
        load_yaml_config("stages/configs/sft.yaml", StageConfig, anchored)
    liger = load_yaml_config("stages/configs/sft.yaml", StageConfig, {"train": {"loss": "liger"}}).train
    with pytest.raises(UserError, match=r"train.loss liger needs the liger_kernel package|liger is a GPU kernel"):
        check_runnable(liger, use_gpu=False, where="sft.yaml")


def test_the_trainer_logs_the_same_losses_with_either_loss_over_accumulated_micro_batches(tmp_path):
    """StageTrainer in process (HF Trainer, gradient accumulation over micro-batches of unequal label
    counts, so num_items_in_batch normalises): the chunked loss trains step by step as the model's own."""
    from datasets import Dataset
    from transformers import TrainingArguments

    from slm.objectives import StageTrainer

    rows = [{k: v[i].tolist() for k, v in batch().items()} for i in range(3)] * 4
    logged = {}
    for kind in ("standard", "chunked"):
        args = TrainingArguments(
            output_dir=str(tmp_path / kind),
            per_device_train_batch_size=2,
            gradient_accumulation_steps=3,
            max_steps=3,
            learning_rate=1e-2,
            logging_steps=1,
            report_to=[],
            save_strategy="no",
            use_cpu=True,
            seed=0,
            dataloader_drop_last=True,
        )
        model = tiny("llama").float().train()
        trainer = StageTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), loss=kind)
        trainer.train()
        logged[kind] = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(logged["standard"]) == 3 and logged["standard"][0] != logged["standard"][-1]
    assert logged["chunked"] == pytest.approx(logged["standard"], rel=1e-5)
