"""train.ema: the average the callback keeps is the exponential moving average of the weights after
each optimizer step (checked against one computed by hand from the same run), it is saved in each
checkpoint as a loadable model, and a run resumed from a checkpoint ends on the same average."""

import pytest
import torch


def train(model_dir, out, resume_dir=None, decay=0.5, seen=None):
    from datasets import Dataset
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from slm.callbacks import EMACallback
    from slm.modeling import load_model, load_tokenizer

    class Record(TrainerCallback):  # the weights after each step, for the average by hand
        def on_step_end(self, args, state, control, model=None, **kwargs):
            if seen is not None:
                seen.append({n: p.detach().clone() for n, p in model.named_parameters()})

    tokenizer = load_tokenizer(model_dir)
    model = load_model(model_dir, dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    rows = [{"input_ids": torch.randint(5, 200, (16,), generator=g).tolist()} for _ in range(16)]
    data = Dataset.from_list([{**r, "labels": r["input_ids"]} for r in rows])
    args = TrainingArguments(
        output_dir=str(out), max_steps=4, save_steps=2, per_device_train_batch_size=4, learning_rate=5e-3,
        report_to=[], use_cpu=True, seed=0, logging_steps=100, disable_tqdm=True, save_only_model=False,
    )  # fmt: skip
    trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[Record()])
    trainer.add_callback(EMACallback(decay, tokenizer, resume_dir))
    trainer.train(resume_from_checkpoint=str(resume_dir) if resume_dir else None)
    return model


def test_the_average_is_the_ema_of_each_step_and_a_resumed_run_ends_on_it(tmp_path, tiny_model_dir):
    from safetensors.torch import load_file

    from slm.modeling import load_model

    start_dir = tiny_model_dir(seed=31)
    start = {n: p.detach().clone() for n, p in load_model(start_dir, dtype=torch.float32).named_parameters()}
    seen = []
    model = train(start_dir, tmp_path / "a", seen=seen)
    by_hand = dict(start)
    for weights in seen:
        by_hand = {n: 0.5 * by_hand[n] + 0.5 * weights[n] for n in by_hand}
    saved = load_file(tmp_path / "a" / "checkpoint-4" / "ema" / "model.safetensors")
    assert len(seen) == 4 and set(saved) <= set(by_hand)
    for name, tensor in saved.items():
        torch.testing.assert_close(tensor, by_hand[name], rtol=0, atol=1e-6)
    final = dict(model.named_parameters())
    assert any(not torch.allclose(saved[n], final[n].detach()) for n in saved)  # an average, not the last step
    ema_model = load_model(tmp_path / "a" / "checkpoint-4" / "ema", dtype=torch.float32)  # a complete model
    assert ema_model.get_output_embeddings().weight.data_ptr() == ema_model.get_input_embeddings().weight.data_ptr()

    train(start_dir, tmp_path / "b", resume_dir=tmp_path / "a" / "checkpoint-2")
    resumed = load_file(tmp_path / "b" / "checkpoint-4" / "ema" / "model.safetensors")
    for name, tensor in saved.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=1e-6)


def test_a_resumed_run_without_a_saved_average_is_refused(tmp_path, tiny_model_dir):
    start_dir = tiny_model_dir(seed=32)
    train(start_dir, tmp_path / "a")
    import shutil

    shutil.rmtree(tmp_path / "a" / "checkpoint-2" / "ema")
    with pytest.raises(RuntimeError, match="has no ema/ weights"):
        train(start_dir, tmp_path / "b", resume_dir=tmp_path / "a" / "checkpoint-2")


def test_ema_is_refused_with_lora_and_its_decay_checked():
    from pydantic import ValidationError

    from slm.config import EMASpec, StageConfig

    with pytest.raises(ValidationError, match="less than 1"):
        EMASpec(decay=1.0)
    base = {
        "stage": "sft", "objective": "chat_sft", "model": {"init": "x"}, "data": {"dataset": "d"},
        "train": {"lr": 1e-4, "save_steps": 5, "micro_batch": 2, "ema": {"decay": 0.9}},
    }  # fmt: skip
    assert StageConfig.model_validate(base).train.ema.decay == 0.9
    with pytest.raises(ValidationError, match="train.ema averages all weights"):
        StageConfig.model_validate({**base, "lora": {"r": 4}})


def test_a_config_without_ema_keeps_the_run_id_it_had_before_ema_existed():
    from slm.config import EMASpec, TrainSpec, config_digest

    spec = TrainSpec(lr=1e-4, save_steps=5, micro_batch=2)
    before = {k: v for k, v in spec.model_dump(mode="json").items() if k not in ("warmup_ratio",
              "gradient_checkpointing", "attn_implementation", "optim", "extra", "ema", "init_gate",
              "early_stopping", "loss")}  # fmt: skip
    assert config_digest(spec) == config_digest(before)
    assert config_digest(spec.model_copy(update={"ema": EMASpec(decay=0.9)})) != config_digest(spec)
