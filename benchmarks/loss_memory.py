"""Loss memory: peak memory of a training step's loss, `train.loss: chunked` vs the model's own (standard).

A one-layer Llama with SmolLM2-135M's width (576) and vocabulary (49,152), one sequence of 2,048
tokens, every position labelled (pretraining's case; an SFT batch labels fewer, which only helps
chunked). Each variant runs forward + backward in its own fresh process; the figure is the peak
resident memory during the step minus the memory before it (on a GPU, torch's peak allocation),
so the model, the batch and the interpreter cancel out and what is left is the step's activations,
which the full-vocabulary logits dominate (2,048 × 49,152 × 4 bytes = 403 MB per copy).

    python benchmarks/loss_memory.py [--vocab 49152] [--seq 2048]
    python benchmarks/loss_memory.py --smoke          # vocabulary 4,096, 256 tokens

Ends with `ratio: <chunked peak / standard peak>`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def peak_rss_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def current_rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def one_step(kind: str, vocab: int, seq: int) -> dict:
    """Forward + backward of one batch with `kind`'s loss; the step's peak memory above its start."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from slm.losses import causal_lm_loss

    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=1,
        num_attention_heads=9,
        num_key_value_heads=3,
        vocab_size=vocab,
        max_position_embeddings=seq,
        tie_word_embeddings=True,
    )
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").train()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    ids = torch.randint(0, vocab, (1, seq), device=device)
    inputs = {"input_ids": ids, "labels": ids.clone(), "use_cache": False}
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = current_rss_bytes()
    if kind == "standard":
        loss = model(**inputs).loss
    else:
        loss = causal_lm_loss(model, inputs, kind)
    loss.backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
    else:
        peak = peak_rss_bytes() - before
    return {"kind": kind, "loss": float(loss), "peak_bytes": peak, "device": device.type}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=49_152)
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one variant in this process
    args = parser.parse_args()
    if args.smoke:
        args.vocab, args.seq = 4096, 256
    if args.one:
        print(json.dumps(one_step(args.one, args.vocab, args.seq)))
        return
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(os.cpu_count() or 1))}
    results = {}
    for kind in ("standard", "chunked"):
        cmd = [sys.executable, __file__, "--one", kind, "--vocab", str(args.vocab), "--seq", str(args.seq)]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
        results[kind] = json.loads(out.stdout.strip().splitlines()[-1])
        r = results[kind]
        print(
            f"{kind}: loss {r['loss']:.4f}, step peak {r['peak_bytes'] / 1e6:,.0f} MB above its start ({r['device']})"
        )
    same = abs(results["chunked"]["loss"] - results["standard"]["loss"]) <= 1e-4 * abs(results["standard"]["loss"])
    print(f"vocabulary {args.vocab:,}, sequence {args.seq:,}; same loss: {'yes' if same else 'NO'}")
    if not same:
        sys.exit("loss_memory: chunked and standard losses differ")
    print(f"ratio: {results['chunked']['peak_bytes'] / results['standard']['peak_bytes']:.3f}")


if __name__ == "__main__":
    main()
