"""Data at scale: build a generated chat corpus of 10^5 and 10^6 rows, then read it as one training rank.

Prints, per size: builder rows/s and peak RSS (hygiene on: exact and near dedup, decontamination
against the shipped MMLU subset and the bench; and hygiene off, for its cost per million rows), and
one training rank's peak RSS while it prepares its examples (memory-mapped split, per-node
tokenization cache) and reads its 1/8 share of them. The target: peak RSS within 1.5x when the
corpus grows 10x. Each measurement runs in a fresh process (peak RSS is per process).

    python benchmarks/data_scale.py                 # 10^5 and 10^6 rows
    python benchmarks/data_scale.py --sizes 20000 200000
    python benchmarks/data_scale.py --smoke            # 500 and 5,000 rows: the code path, in seconds

Ends with `ratio: <builder peak anonymous memory, largest / smallest corpus>`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORDS = (
    "amber basalt cedar delta ember fjord garnet harbor island juniper kestrel lagoon meadow nectar orchard "
    "pebble quarry ravine saffron tundra upland valley willow yarrow zephyr anvil beacon canyon dune estuary "
    "falcon glacier heath inlet jetty knoll ledge marsh nook oasis prairie reef shoal thicket river stone "
    "morning winter crossed rested watched"
).split()


def corpus(path: Path, rows: int) -> None:
    """Chat rows of 30-70 words; 2% exact repeats and 2% one-word edits of earlier rows."""
    rng = random.Random(rows)
    kept: list[tuple[str, str]] = []
    with open(path, "w") as f:
        for i in range(rows):
            roll = rng.random()
            if kept and roll < 0.02:
                prompt, response = rng.choice(kept)
            elif kept and roll < 0.04:
                prompt, response = rng.choice(kept)
                words = prompt.split()
                words[rng.randrange(len(words))] = rng.choice(WORDS)
                prompt = " ".join(words)
            else:
                prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 60))) + f" #{i}"
                response = " ".join(rng.choice(WORDS) for _ in range(10))
                if len(kept) < 10_000:
                    kept.append((prompt, response))
            f.write(json.dumps({"prompt": prompt, "response": response}) + "\n")


# Peak RSS counts the pages of memory-mapped files a process has touched: the page cache, shared by the
# ranks of a node and given back under pressure. Peak anonymous memory (sampled from /proc) is what
# the process itself holds; the 1.5x target is about that, and both are printed.
SAMPLER = """
import threading
PEAK_ANON = [0]
def _sample():
    while True:
        for line in open("/proc/self/status"):
            if line.startswith("RssAnon:"):
                PEAK_ANON[0] = max(PEAK_ANON[0], int(line.split()[1]) // 1024)
        time.sleep(0.05)
threading.Thread(target=_sample, daemon=True).start()
"""

BUILD = (
    """
import json, resource, sys, time
sys.path.insert(0, {repo!r})
"""
    + SAMPLER
    + """
from slm.data_builders import run_builder
from slm.orchestration.eval_sets import eval_index_for
from slm.config import HygieneSpec, SweepSpec
from slm.store import Store
evals = eval_index_for(SweepSpec(mmlu_dir="eval/data/mmlu", bench="eval/benches/truth106.jsonl"), HygieneSpec())
t = time.time()
manifest = run_builder({config!r}, Store.open({store!r}), evals)
seconds = time.time() - t
print(json.dumps({{"seconds": seconds, "rows": manifest["splits"]["train"]["rows"], "peak_anon_mb": PEAK_ANON[0],
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""
)

RANK = (
    """
import json, resource, sys, time
sys.path.insert(0, {repo!r})
"""
    + SAMPLER
    + """
from types import SimpleNamespace
from transformers import AutoTokenizer
from slm.examples import supervised_chat
tokenizer = AutoTokenizer.from_pretrained({tokenizer!r})
job = SimpleNamespace(store={store!r}, dataset="datasets/scale", stage="sft", max_length=256, run_id="bench-{rows}",
                      packing=False)  # the map as measured before packing existed
t = time.time()
data = supervised_chat(job, tokenizer, "train")
prepared = time.time() - t
share = range(0, len(data), 8)  # rank 0 of 8: DistributedSampler's stride
tokens = sum(len(data[i]["input_ids"]) for i in share)
print(json.dumps({{"prepare_seconds": prepared, "examples": len(data), "share_tokens": tokens,
                  "peak_anon_mb": PEAK_ANON[0],
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""
)


def run(code: str, env: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(rows: int, root: Path, tokenizer: Path, shard_rows: int) -> dict:
    import yaml

    env = {
        **os.environ,
        "SLM_CACHE": str(root / "cache"),
        "OMP_NUM_THREADS": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
    }
    source = root / f"corpus-{rows}.jsonl"
    t = time.time()
    corpus(source, rows)
    print(f"[{rows:,}] corpus written in {time.time() - t:.0f}s ({source.stat().st_size / 1e6:,.0f} MB)", flush=True)
    result = {"rows": rows}
    for hygiene in (True, False):
        config = root / f"build-{rows}-{hygiene}.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "builder": "sft",
                    "inputs": [{"path": str(source), "name": "corpus"}],
                    "output": "datasets/scale",
                    "num_shards": 8,
                    "max_shard_rows": shard_rows,
                    "hygiene": {} if hygiene else {"dedup": False, "near_dedup": False, "decontaminate": False},
                }
            )
        )
        build = run(BUILD.format(repo=str(REPO), config=str(config), store=str(root / f"store-{rows}-{hygiene}")), env)
        key = "build" if hygiene else "build_no_hygiene"
        result[key] = {**build, "rows_per_s": rows / build["seconds"]}
        print(
            f"[{rows:,}] build (hygiene {'on' if hygiene else 'off'}): {build['seconds']:.0f}s, "
            f"{rows / build['seconds']:,.0f} rows/s, peak anonymous {build['peak_anon_mb']:,.0f} MB, "
            f"peak RSS {build['peak_rss_mb']:,.0f} MB, "
            f"{build['rows']:,} rows written",
            flush=True,
        )
    rank = run(
        RANK.format(repo=str(REPO), tokenizer=str(tokenizer), store=str(root / f"store-{rows}-True"), rows=rows), env
    )
    result["rank"] = rank
    print(
        f"[{rows:,}] training rank: examples prepared in {rank['prepare_seconds']:.0f}s, "
        f"{rank['examples']:,} examples, its 1/8 share read ({rank['share_tokens']:,} tokens), "
        f"peak anonymous {rank['peak_anon_mb']:,.0f} MB, peak RSS {rank['peak_rss_mb']:,.0f} MB",
        flush=True,
    )
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument(
        "--max-shard-rows",
        type=int,
        default=10_000,
        help="rows per shard (the builder holds one shard at a time: the same at every corpus size)",
    )
    p.add_argument("--out", help="write the figures as JSON here")
    p.add_argument("--smoke", action="store_true", help="500 and 5,000 rows in 1,000-row shards")
    args = p.parse_args()
    if args.smoke:
        args.sizes, args.max_shard_rows = [500, 5_000], 1_000
    sys.path.insert(0, str(REPO))
    from slm.data_builders.tokenizer import train_tokenizer

    with tempfile.TemporaryDirectory(prefix="slm-data-scale-") as tmp:
        root = Path(tmp)
        vocabulary = root / "words.txt"  # a word is a token or two, as with a real tokenizer on real text
        vocabulary.write_text("\n".join(" ".join(random.Random(i).sample(WORDS, 20)) for i in range(2000)))
        tokenizer = train_tokenizer([vocabulary], 512)
        tokenizer.save_pretrained(root / "tokenizer")
        results = [measure(rows, root, root / "tokenizer", args.max_shard_rows) for rows in args.sizes]
    small, large = results[0], results[-1]
    growth = large["rows"] / small["rows"]
    print(f"\ncorpus {growth:.0f}x larger ({small['rows']:,} → {large['rows']:,} rows):")
    for what, key in (("builder", "build"), ("builder, hygiene off", "build_no_hygiene"), ("training rank", "rank")):
        anon = large[key]["peak_anon_mb"] / small[key]["peak_anon_mb"]
        rss = large[key]["peak_rss_mb"] / small[key]["peak_rss_mb"]
        print(
            f"  {what:22s} peak anonymous {small[key]['peak_anon_mb']:,.0f} → {large[key]['peak_anon_mb']:,.0f} MB: "
            f"{anon:.2f}x ({'within' if anon <= 1.5 else 'OVER'} the 1.5x target); peak RSS with mapped pages "
            f"{small[key]['peak_rss_mb']:,.0f} → {large[key]['peak_rss_mb']:,.0f} MB: {rss:.2f}x"
        )
    for r in results:
        cost = (r["build"]["seconds"] - r["build_no_hygiene"]["seconds"]) / r["rows"] * 1e6
        print(
            f"  dedup + decontamination at {r['rows']:,} rows: {cost:,.0f} s per million rows "
            f"({r['build']['rows_per_s']:,.0f} vs {r['build_no_hygiene']['rows_per_s']:,.0f} rows/s)"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"ratio: {large['build']['peak_anon_mb'] / small['build']['peak_anon_mb']:.2f}")


if __name__ == "__main__":
    main()
