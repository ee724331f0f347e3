"""GPU check: the training path and the sweep's scoring on one lent GPU, in one short run.

HF Trainer + DeepSpeed ZeRO-2 (ds_configs/zero2.json, as the stages load it), bf16, a model of
Qwen2-0.5B's shape built from its config (random weights: throughput does not depend on them),
chat-length examples (lengths drawn log-normal, median 256 tokens, clipped to 32..2,048, the second
half of each labelled as an assistant turn would be). For packing off and on, and for each loss
(`standard`, `chunked`, and `liger` when liger-kernel is importable), it times optimizer steps after
warm-up and prints tokens/s (all row tokens and the labelled ones), MFU against the GPU's bf16 peak
(slm/mfu.py) and peak memory. Then MMLU scoring items/s through lm-eval on the shipped subjects
(eval/data/mmlu), as the sweep scores a checkpoint, when lm-eval is importable.

The lent machine has torch, transformers, accelerate and peft but no DeepSpeed, datasets, TRL,
pydantic or lm-eval: `benchmarks/gpu_wheels.sh` downloads those wheels into .whl (under 64 MiB),
and the device command installs them first (see the script). Writes gpu_check.json to $OUT (or
--out) beside its printed lines.

    python benchmarks/gpu_check.py [--steps 12] [--seq 2048] [--micro-batch 8]
    python benchmarks/gpu_check.py --smoke       # CPU, a tiny Qwen2 shape, fp32, gloo: the code path

Ends with `ratio: <labelled tokens/s packed / padded, standard loss>`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from benchmarks.tiny_checkpoints import tiny_tokenizer
from slm import REPO_ROOT

QWEN2_05B = {  # Qwen/Qwen2-0.5B's config.json, as published
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "vocab_size": 151_936,
    "max_position_embeddings": 32_768,
    "rope_theta": 1_000_000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
}
TINY = {**QWEN2_05B, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}


def chat_examples(n: int, seq: int, vocab: int, seed: int = 0) -> list[dict]:
    import numpy as np

    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(np.log(256 if seq >= 512 else seq / 4), 0.8, n), 32, seq).astype(int)
    out = []
    for length in lengths:
        ids = rng.integers(1, vocab, length).tolist()
        half = length // 2
        out.append({"input_ids": ids, "labels": [-100] * half + ids[half:]})
    return out


class StepTimer:
    """Wall time of the optimizer steps after the first `warmup` (the device synchronised at both ends)."""

    def __init__(self, warmup: int):
        from transformers import TrainerCallback

        timer = self

        class Callback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                if state.global_step == timer.warmup:
                    timer.sync()
                    timer.start = time.perf_counter()

            def on_train_end(self, args, state, control, **kwargs):
                timer.sync()
                timer.seconds = time.perf_counter() - timer.start

        self.warmup, self.start, self.seconds, self.callback = warmup, None, None, Callback()

    @staticmethod
    def sync():
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()


class Counting:
    """Wraps a collator: counts the row tokens and labelled tokens of the batches after the warm-up."""

    def __init__(self, collate, warmup_batches: int):
        self.collate, self.warmup, self.seen, self.tokens, self.labelled = collate, warmup_batches, 0, 0, 0

    def __call__(self, rows):
        batch = self.collate(rows)
        self.seen += 1
        if self.seen > self.warmup:
            self.tokens += int(batch["input_ids"].numel())
            self.labelled += int((batch["labels"][:, 1:] != -100).sum())
        return batch


def train_once(shape: dict, examples, packing: bool, loss: str, args, work: Path) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoConfig, AutoModelForCausalLM, TrainingArguments

    from slm.ds_config import load_ds_config
    from slm.examples import padding_collator
    from slm.mfu import flops_per_token, model_dims, peak_tflops
    from slm.objectives import StageTrainer
    from slm.packing import pack_examples, packed_collator

    gpu = torch.cuda.is_available()
    torch.manual_seed(0)
    config = AutoConfig.for_model("qwen2", **shape)
    attn = args.attn if gpu else "sdpa"
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attn)
    data = Dataset.from_list(examples)
    tokenizer = tiny_tokenizer()  # ids are made up; only its pad id is used
    if packing:
        data = pack_examples(data, args.seq, {})
        collate = packed_collator(tokenizer, attn)
    else:
        collate = padding_collator(tokenizer)
    counting = Counting(collate, args.warmup)
    timer = StepTimer(args.warmup)
    ds_config = load_ds_config("ds_configs/zero2.json", gpu)
    arguments = TrainingArguments(
        output_dir=str(work / f"{'packed' if packing else 'padded'}-{loss}"),
        per_device_train_batch_size=args.micro_batch,
        max_steps=args.warmup + args.steps,
        learning_rate=1e-4,
        bf16=gpu,
        deepspeed=ds_config,
        use_cpu=not gpu,
        ddp_backend=None if gpu else "gloo",
        save_strategy="no",
        report_to=[],
        logging_steps=10_000,
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_drop_last=True,
        include_num_input_tokens_seen="no",
    )
    trainer = StageTrainer(
        model=model,
        args=arguments,
        train_dataset=data,
        data_collator=counting,
        callbacks=[timer.callback],
        loss=loss,
    )
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # its end-of-run metrics dict; the line below says it
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    engine = type(trainer.model_wrapped).__name__
    if engine != "DeepSpeedEngine":
        sys.exit(f"gpu_check: the Trainer ran {engine}, not DeepSpeed")
    seconds = timer.seconds
    layers, width = model_dims(config)
    parameters = sum(p.numel() for p in model.parameters())
    per_token = flops_per_token(parameters, layers, width, args.seq)
    rate = counting.tokens / seconds
    peak = peak_tflops(torch.cuda.get_device_name(0), "bf16") if gpu else None
    result = {
        "packing": packing,
        "loss": loss,
        "engine": f"{engine} ZeRO-{trainer.model_wrapped.zero_optimization_stage()}",
        "attn": attn,
        "steps_timed": args.steps,
        "seconds": round(seconds, 3),
        "tokens_per_s": round(rate, 1),
        "labelled_tokens_per_s": round(counting.labelled / seconds, 1),
        "mfu": round(rate * per_token / (peak * 1e12), 4) if peak else None,
        "peak_memory_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2) if gpu else None,
    }
    del trainer, model
    if gpu:
        torch.cuda.empty_cache()
    return result


def mmlu_items_per_s(shape: dict, smoke: bool, work: Path) -> dict:
    """The sweep's MMLU scoring (slm/eval/mmlu.py through lm-eval) of the random model on the GPU."""
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        return {"skipped": "lm-eval is not importable here (carry its wheels to measure this)"}
    import torch
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoConfig, AutoModelForCausalLM

    from slm.eval import mmlu

    data = REPO_ROOT / "eval/data/mmlu"
    subjects = sorted(p.name.removesuffix("_test.csv") for p in (data / "test").glob("*_test.csv"))
    tokenizer = tiny_tokenizer()
    config = AutoConfig.for_model("qwen2", **{**shape, "vocab_size": len(tokenizer)})
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_config(config).to(device, torch.bfloat16 if device == "cuda" else torch.float32)
    lm = HFLM(pretrained=model.eval(), tokenizer=tokenizer, batch_size=64, device=device)
    limit = 2 if smoke else None
    items = sum(min(n, limit or n) for n in mmlu.count_items(data, subjects).values())
    start = time.perf_counter()
    mmlu.evaluate(lm, data, subjects, work / "mmlu-tasks", limit=limit, num_fewshot=0 if smoke else 2)
    seconds = time.perf_counter() - start
    return {
        "items": items,
        "subjects": len(subjects),
        "seconds": round(seconds, 2),
        "items_per_s": round(items / seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--attn", default="sdpa", help="sdpa (default), or flash_attention_2 where installed")
    parser.add_argument("--out", default=os.environ.get("OUT") or tempfile.mkdtemp())
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    group = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29533"}
    for key, value in group.items():
        os.environ.setdefault(key, value)  # one process, no launcher: DeepSpeed's group of one
    import torch

    from slm.mfu import peak_tflops

    gpu = torch.cuda.is_available()
    if args.smoke:
        args.steps, args.warmup, args.seq, args.micro_batch = 2, 1, 128, 2
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    elif not gpu:
        sys.exit("gpu_check: no CUDA device here; on CPU run it with --smoke")
    shape = TINY if args.smoke else QWEN2_05B
    name = torch.cuda.get_device_name(0) if gpu else "CPU"
    print(f"device: {name}; torch {torch.__version__}; bf16 peak {peak_tflops(name, 'bf16') if gpu else None} TFLOP/s")
    needed = (args.warmup + args.steps) * args.micro_batch * 8  # enough rows for packed and padded alike
    examples = chat_examples(needed, args.seq, shape["vocab_size"])
    losses = ["standard", "chunked"]
    if gpu:
        try:
            import liger_kernel  # noqa: F401

            losses.append("liger")
        except ImportError:
            print("liger: liger-kernel is not importable here; its loss is not measured")
    work = Path(tempfile.mkdtemp())
    results = []
    for packing in (False, True):
        for loss in losses:
            r = train_once(shape, examples, packing, loss, args, work)
            results.append(r)
            print(
                f"packing {'on ' if packing else 'off'} loss {loss:8s} {r['tokens_per_s']:>10,.0f} tokens/s "
                f"({r['labelled_tokens_per_s']:,.0f} labelled), MFU {r['mfu'] if r['mfu'] is not None else '-'}, "
                f"peak {r['peak_memory_gb'] if r['peak_memory_gb'] is not None else '-'} GB ({r['engine']})"
            )
    scoring = mmlu_items_per_s(shape, args.smoke, work)
    print(f"mmlu scoring: {scoring}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(
        json.dumps({"device": name, "torch": torch.__version__, "train": results, "mmlu": scoring}, indent=2) + "\n"
    )
    standard = {r["packing"]: r for r in results if r["loss"] == "standard"}
    print(f"ratio: {standard[True]['labelled_tokens_per_s'] / standard[False]['labelled_tokens_per_s']:.2f}")


if __name__ == "__main__":
    main()
