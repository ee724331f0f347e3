"""Checkpoint stall: training time lost per checkpoint, background upload vs upload before training goes on.

The HF Trainer with the engine's own StoreCheckpointCallback on a model of SmolLM2-135M's size
(its config's shape, random weights: 135M parameters, so about 0.5 GB of weights and 1.1 GB of
AdamW state a checkpoint), short steps (micro-batch 1, 64 tokens) so the checkpoints dominate. The
same steps run three times: without checkpoints, with `background_upload: false` (the upload
before the next step, as it was) and with the background upload (the default). The time lost per
checkpoint is a run's extra wall time over the run without checkpoints, divided by its checkpoints;
it includes the local write, which both pay. The store is a local directory here (a copy and a
sha256 per file: the same work as an S3 upload minus the network), so on a real S3 store the
upload's share, and so the gain, is larger.

    python benchmarks/checkpoint_stall.py [--steps 24] [--save-every 8]
    python benchmarks/checkpoint_stall.py --smoke     # a tiny Llama, 6 steps

Ends with `ratio: <background time lost / upload-first time lost>`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SMOLLM2_135M = {  # HuggingFaceTB/SmolLM2-135M's config.json
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "vocab_size": 49_152,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": True,
}
TINY = {**SMOLLM2_135M, "hidden_size": 72, "intermediate_size": 128, "num_hidden_layers": 2, "vocab_size": 4096}


def train(shape: dict, steps: int, save_every: int | None, background: bool, root: Path) -> float:
    """Wall seconds of `steps` optimizer steps (with checkpoints every `save_every`, persisted to a store)."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, LlamaConfig, Trainer, TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    from slm.callbacks import StoreCheckpointCallback
    from slm.store import Store

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(LlamaConfig(**shape), attn_implementation="sdpa")
    ids = torch.randint(0, shape["vocab_size"], (steps, 64)).tolist()
    data = Dataset.from_dict({"input_ids": ids, "labels": ids})
    tag = "none" if save_every is None else ("background" if background else "upload-first")
    work = root / tag
    (work / "logs").mkdir(parents=True)
    args = TrainingArguments(
        output_dir=str(work / "trainer"),
        per_device_train_batch_size=1,
        max_steps=steps,
        learning_rate=1e-4,
        use_cpu=not torch.cuda.is_available(),
        save_strategy="steps" if save_every else "no",
        save_steps=save_every or 1,
        save_total_limit=2,
        report_to=[],
        logging_steps=10_000,
        disable_tqdm=True,
        dataloader_drop_last=True,
    )
    callbacks = []
    if save_every:
        store = Store.open(str(work / "store"))
        prefix = "runs/pretrain/pretrain-0123456789"
        callbacks.append(StoreCheckpointCallback(store, prefix, 0, work / "logs", background=background))
    trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=callbacks)
    trainer.remove_callback(PrinterCallback)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    if save_every:
        found = store.children(f"{prefix}/checkpoints")
        assert all(store.is_complete(f"{prefix}/checkpoints/{c}") for c in found if c.startswith("checkpoint-"))
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--save-every", type=int, default=8)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    shape = TINY if args.smoke else SMOLLM2_135M
    if args.smoke:
        args.steps, args.save_every = 6, 3
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    saves = args.steps // args.save_every
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base = train(shape, args.steps, None, False, root)
        first = train(shape, args.steps, args.save_every, False, root)
        background = train(shape, args.steps, args.save_every, True, root)
    lost_first, lost_bg = (first - base) / saves, (background - base) / saves
    print(f"{args.steps} steps, a checkpoint every {args.save_every} ({saves}), hidden size {shape['hidden_size']}")
    print(f"no checkpoints          : {base:7.1f} s")
    print(f"upload before going on  : {first:7.1f} s ({lost_first:5.2f} s lost per checkpoint)")
    print(f"upload in the background: {background:7.1f} s ({lost_bg:5.2f} s lost per checkpoint)")
    print(f"ratio: {max(lost_bg, 0.0) / max(lost_first, 1e-9):.2f}")


if __name__ == "__main__":
    main()
