"""Checkpoint stall: training time lost per checkpoint, background upload vs upload before training goes on.

The HF Trainer with the engine's own StoreCheckpointCallback on a model of SmolLM2-135M's size
(its config's shape, random weights: 135M parameters, so about 0.5 GB of weights and 1.1 GB of
AdamW state a checkpoint), short steps (micro-batch 1, 64 tokens) so the checkpoints dominate. The
same steps run three times: without checkpoints, with `background_upload: false` (the upload
before the next step, as it was) and with the background upload (the default). The time lost per
checkpoint is a run's extra wall time over the run without checkpoints, divided by its checkpoints;
it includes the local write, which both pay, and any wait for the previous upload (at most one is in
flight): checkpoints come every 16 steps (about 18 s of training here), longer than one upload takes,
as a real run's checkpoints (minutes apart) do; the Trainer also saves at the last step, whose upload
the end of training waits for, and that wait is counted too. Each checkpoint's marker is
printed: its local write, its wait for the previous upload, and its upload time.

What it models. On a GPU box the training step runs on the GPU and the box's CPU cores idle, so an
upload thread takes nothing from training; here the step runs on CPU cores. By default training gets
all cores but one (`--train-threads`), the one left standing in for a GPU box's idle cores, and all
three runs get the same count. With `--train-threads` equal to the core count the upload competes
with training for the cores, which measures that contention rather than a stall (both are in the
README). The store is the real S3 server the tests run (SeaweedFS on 127.0.0.1, boto3 multipart
uploads, a sha256 per file), as on a GPU box whose checkpoints go to S3; it runs at nice 19, standing
in for a server on another machine, which takes no cycles from the box. `--store local` copies to a
directory instead (the same hashing, no network stack).

    python benchmarks/checkpoint_stall.py [--steps 56] [--save-every 16] [--store s3|local] [--train-threads N]
    python benchmarks/checkpoint_stall.py --smoke     # a tiny Llama, 6 steps

Ends with `ratio: <background time lost / upload-first time lost>`.
"""

from __future__ import annotations

import argparse
import contextlib
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


def train(
    shape: dict, steps: int, save_every: int | None, background: bool, root: Path, store_uri: str
) -> tuple[float, list[dict]]:
    """Wall seconds of `steps` optimizer steps (with checkpoints every `save_every`, persisted to a store),
    and each checkpoint's marker (its local write `save_s`, `waited_s` for the previous upload, `upload_s`)."""
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
        store = Store.open(f"{store_uri}/{tag}" if store_uri.startswith("s3://") else str(work / "store"))
        prefix = "runs/pretrain/pretrain-0123456789"
        callbacks.append(StoreCheckpointCallback(store, prefix, 0, work / "logs", background=background))
    trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=callbacks)
    trainer.remove_callback(PrinterCallback)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    markers = []
    if save_every:
        found = [c for c in store.children(f"{prefix}/checkpoints") if c.startswith("checkpoint-")]
        markers = [store.tree_manifest(f"{prefix}/checkpoints/{c}") for c in sorted(found, key=lambda c: int(c[11:]))]
    return seconds, markers


def describe(markers: list[dict]) -> str:
    return "; ".join(
        f"step {m['step']}: write {m['save_s'] or 0:.1f} s, waited {m['waited_s']:.1f} s, upload {m['upload_s']:.1f} s"
        for m in markers
    )


@contextlib.contextmanager
def s3_store(root: Path, kind: str):
    """A bucket on a SeaweedFS server on 127.0.0.1 for the run (its URI), or "" for a local directory."""
    if kind == "local":
        yield ""
        return
    from tests.support.seaweed import SeaweedS3, environ

    # On a GPU box the S3 server is another machine; here it shares the two cores, so it runs at the
    # lowest priority, taking the cycles training leaves, as a remote server takes none of them.
    server = SeaweedS3(root / "seaweed", nice=19)
    server.start()
    try:
        with environ(server.env()):
            server.create_bucket("stall")
            yield "s3://stall/bench"
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=56)
    parser.add_argument("--save-every", type=int, default=16)
    parser.add_argument("--store", choices=["s3", "local"], default="s3")
    cores = os.cpu_count() or 1
    parser.add_argument(
        "--train-threads", type=int, default=max(cores - 1, 1), help="torch threads for training (default: cores - 1)"
    )
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    shape = TINY if args.smoke else SMOLLM2_135M
    if args.smoke:
        args.steps, args.save_every = 6, 3
    import torch

    torch.set_num_threads(args.train_threads)
    with tempfile.TemporaryDirectory() as tmp, s3_store(Path(tmp), args.store) as store_uri:
        root = Path(tmp)
        base, _ = train(shape, args.steps, None, False, root, store_uri)
        first, first_markers = train(shape, args.steps, args.save_every, False, root, store_uri)
        background, bg_markers = train(shape, args.steps, args.save_every, True, root, store_uri)
    saves = len(bg_markers)  # every save_every steps, and the Trainer's save at the last step
    assert len(first_markers) == saves
    lost_first, lost_bg = (first - base) / saves, (background - base) / saves
    print(
        f"{args.steps} steps, {saves} checkpoints (every {args.save_every} steps and the last), hidden size "
        f"{shape['hidden_size']}, {args.store} store, training on {args.train_threads} of {cores} cores"
    )
    print(f"no checkpoints          : {base:7.1f} s")
    print(f"upload before going on  : {first:7.1f} s ({lost_first:5.2f} s lost per checkpoint)")
    print(f"upload in the background: {background:7.1f} s ({lost_bg:5.2f} s lost per checkpoint)")
    print(f"  upload first: {describe(first_markers)}")
    print(f"  background  : {describe(bg_markers)}")
    print(f"ratio: {max(lost_bg, 0.0) / max(lost_first, 1e-9):.2f}")


if __name__ == "__main__":
    main()
