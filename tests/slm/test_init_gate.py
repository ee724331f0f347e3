"""train.init_gate (plan 004): before the first optimizer step, a pretrained init's loss must be at most
max_loss and below ln(vocab); a random init (what a failed load amounts to) is refused with one line and
nothing trained. Run on HF's own Trainer, as the engine runs it, with the callback the engine adds."""

import math
from types import SimpleNamespace

import pytest
import torch

from slm import layout
from slm.config import InitGateSpec, StageConfig
from slm.errors import UserError
from slm.store import Store

ROWS = 24


def rows():
    """Sequences of a repeating pattern: a model that trained on it predicts them far below ln(vocab)."""
    from datasets import Dataset

    out = []
    for i in range(ROWS):
        ids = [5 + (i + j) % 7 for j in range(16)]
        out.append({"input_ids": ids, "attention_mask": [1] * 16, "labels": [-100] * 4 + ids[4:]})
    return Dataset.from_list(out)


@pytest.fixture(scope="module")
def pretrained(tiny_model_dir, tmp_path_factory):
    """A tiny model trained on the pattern (its step-0 loss on it is low), and its random twin."""
    from transformers import Trainer, TrainingArguments

    from slm.modeling import load_model, load_tokenizer

    random_dir = tiny_model_dir(seed=41)
    model = load_model(random_dir, dtype=torch.float32)
    args = TrainingArguments(
        output_dir=str(tmp_path_factory.mktemp("pretrain")), max_steps=40, per_device_train_batch_size=8,
        learning_rate=1e-2, report_to=[], use_cpu=True, seed=0, save_strategy="no", disable_tqdm=True,
    )  # fmt: skip
    Trainer(model=model, args=args, train_dataset=rows()).train()
    out = tmp_path_factory.mktemp("pretrained")
    model.save_pretrained(out)
    load_tokenizer(random_dir).save_pretrained(out)
    return out, random_dir


def train(model_dir, tmp_path, spec=None, with_eval=False, attempt=1):
    from transformers import Trainer, TrainingArguments

    from slm.callbacks import InitGateCallback
    from slm.modeling import load_model

    spec = spec or InitGateSpec()
    model = load_model(model_dir, dtype=torch.float32)
    store = Store.open(str(tmp_path / "store"))
    job = SimpleNamespace(stage="sft", run_prefix="runs/sft/sft-x", init=SimpleNamespace(spec=str(model_dir)))
    job.attempt = attempt
    data = rows()
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=2, save_steps=1, per_device_train_batch_size=4,
        learning_rate=1e-3, report_to=[], use_cpu=True, seed=0, disable_tqdm=True,
        eval_strategy="steps" if with_eval else "no", eval_steps=1 if with_eval else None, eval_on_start=with_eval,
    )  # fmt: skip
    gate = InitGateCallback(spec, job, store, data, with_eval, model.config.vocab_size)
    gate.refuse_again()
    trainer = Trainer(model=model, args=args, train_dataset=data, eval_dataset=data if with_eval else None)
    trainer.add_callback(gate)
    gate.collator = trainer.data_collator
    try:
        trainer.train()
    finally:
        record = (
            store.read_json(layout.init_gate(job.run_prefix))
            if store.exists(layout.init_gate(job.run_prefix))
            else None
        )
    return trainer, record


def loss_by_hand(model_dir, n):
    from slm.modeling import load_model

    model = load_model(model_dir, dtype=torch.float32).eval()
    total = tokens = 0
    with torch.no_grad():
        for row in rows().select(range(n)):
            batch = {k: torch.tensor([row[k]]) for k in ("input_ids", "attention_mask", "labels")}
            count = int((batch["labels"][:, 1:] != -100).sum())
            total += float(model(**batch).loss) * count
            tokens += count
    return total / tokens


def test_a_pretrained_init_passes_on_the_first_rows_and_the_loss_is_recorded(pretrained, tmp_path):
    good, _ = pretrained
    trainer, record = train(good, tmp_path, InitGateSpec(batches=2))
    assert trainer.state.global_step == 2 and record["passed"]
    assert record["measured_on"] == "the first 8 training rows"  # 2 micro-batches of 4, one worker
    assert record["loss"] == pytest.approx(loss_by_hand(good, 8), abs=1e-5)
    assert record["loss"] < 2.0 < record["random_init_loss"] == pytest.approx(math.log(trainer.model.config.vocab_size))


def test_a_random_init_is_refused_before_any_step_and_a_restart_refuses_from_the_record(pretrained, tmp_path):
    _, random_dir = pretrained
    with pytest.raises(UserError) as refused:
        train(random_dir, tmp_path)
    message = str(refused.value)
    assert "\n" not in message and message.startswith("sft: init gate refused the run: step-0 loss")
    assert "train.init_gate.max_loss 6" in message and "ln(" in message
    assert not (tmp_path / "out" / "checkpoint-1").exists()  # nothing trained, nothing saved
    record = Store.open(str(tmp_path / "store")).read_json(layout.init_gate("runs/sft/sft-x"))
    assert not record["passed"] and record["message"] == message
    assert record["loss"] > min(record["max_loss"], record["random_init_loss"] - 0.5)  # near ln(vocab): chance
    # a Ray Train restart of the same attempt refuses at once, before loading anything
    from slm.callbacks import InitGateCallback

    job = SimpleNamespace(stage="sft", run_prefix="runs/sft/sft-x", init=None, attempt=1)
    again = InitGateCallback(InitGateSpec(), job, Store.open(str(tmp_path / "store")), None, False, 10)
    with pytest.raises(UserError, match="init gate refused"):
        again.refuse_again()
    later = SimpleNamespace(**{**vars(job), "attempt": 2})  # a new launch, after the cause was fixed
    InitGateCallback(InitGateSpec(), later, again.store, None, False, 10).refuse_again()  # measured afresh


def test_the_threshold_is_the_configured_one(pretrained, tmp_path):
    good, _ = pretrained
    _, record = train(good, tmp_path / "a", InitGateSpec(batches=2))
    with pytest.raises(UserError, match=f"max_loss {record['loss'] / 2:g}"):
        train(good, tmp_path / "b", InitGateSpec(max_loss=record["loss"] / 2, batches=2))


def test_with_a_validation_split_the_gate_reads_the_step_0_evaluation(pretrained, tmp_path):
    good, random_dir = pretrained
    trainer, record = train(good, tmp_path / "a", with_eval=True)
    step0 = [h for h in trainer.state.log_history if "eval_loss" in h and h["step"] == 0]
    assert record["measured_on"] == "the validation split" and record["loss"] == pytest.approx(step0[0]["eval_loss"])
    with pytest.raises(UserError, match="on the validation split"):
        train(random_dir, tmp_path / "b", with_eval=True)


def test_early_stopping_needs_a_validation_split_and_the_gate_can_be_turned_off():
    base = {
        "stage": "repair",
        "objective": "chat_sft",
        "model": {"init": "champion:x"},
        "data": {"dataset": "datasets/repair"},
        "train": {"lr": 1e-4, "save_steps": 10, "micro_batch": 2, "early_stopping": {"patience": 2}},
    }
    with pytest.raises(ValueError, match="early_stopping watches the validation loss: set data.eval_split"):
        StageConfig.model_validate(base)
    ok = StageConfig.model_validate({**base, "data": {"dataset": "datasets/repair", "eval_split": "validation"}})
    assert ok.train.early_stopping.patience == 2 and ok.train.init_gate == InitGateSpec()
    off = StageConfig.model_validate({**base, "train": {**base["train"], "early_stopping": None, "init_gate": None}})
    assert off.train.init_gate is None
