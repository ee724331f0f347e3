"""Dedup and decontamination: a planted source (known duplicates, near duplicates, rows copied or
lightly edited from MMLU and from the bench) loses every planted row and keeps every clean one, with
the counts and samples in the manifest; the project's own fixtures have nothing to lose."""

import csv
import json
import random
from pathlib import Path

import pytest
import yaml

from slm import REPO_ROOT
from slm.config import HygieneSpec, SweepSpec
from slm.contamination import EvalIndex, EvalItem
from slm.data_builders import run_builder
from slm.datasets import load_split
from slm.eval.bench import load_bench
from slm.orchestration.eval_sets import eval_index_for, mmlu_items_from
from slm.store import Store

FULL_MMLU = REPO_ROOT.parent / "shared" / "data" / "mmlu"
WORDS = (
    "amber basalt cedar delta ember fjord garnet harbor island juniper kestrel lagoon meadow nectar orchard "
    "pebble quarry ravine saffron tundra upland valley willow yarrow zephyr anvil beacon canyon dune estuary "
    "falcon glacier heath inlet jetty knoll ledge marsh nook oasis prairie reef shoal thicket"
).split()


def clean_rows(n: int) -> list[str]:
    """Long random sentences: no two share a five-word run, none resembles an evaluation item."""
    rng = random.Random(7)
    return [" ".join(rng.choice(WORDS) for _ in range(80)) + f" (note {i})." for i in range(n)]


def mmlu_rows(k: int) -> list[list[str]]:
    """Long MMLU test items of the shipped subset (question, four choices)."""
    with open(REPO_ROOT / "eval/data/mmlu/test/philosophy_test.csv", newline="", encoding="utf-8") as f:
        items = [row for row in csv.reader(f) if len(row[0].split()) >= 30]
    return items[:k]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted")
    clean = clean_rows(60)
    bench = [b["prompt"] for b in load_bench(REPO_ROOT / "eval/benches/truth106.jsonl")]
    mcq = mmlu_rows(4)
    planted = {
        "exact": [clean[0], clean[1].upper(), clean[2].replace(" ", "  ") + "!!"],  # same text after normalising
        "near": [
            " ".join(clean[3].split()[:-3] + ["kestrel", "lagoon", "meadow"]),  # a 3-word edit at the end
            clean[4].replace(clean[4].split()[10], "zzz", 1),
        ],  # one word changed
        "mmlu": [
            "\n".join(mcq[0][:5]),  # copied: question and choices
            f"Practice question. {mcq[1][0].upper()} Choose wisely.",  # the question, recased, in a wrapper
            mcq[2][0].replace(mcq[2][0].split()[-1], "something", 1) + " " + " ".join(mcq[2][1:5]),
        ],  # an edited word
        "bench": [f"Quick one — {bench[30].upper()} Thanks!", bench[60], f"{bench[0]} Please answer briefly."],
    }
    copies = [{"prompt": text, "response": "An answer."} for texts in planted.values() for text in texts]
    random.Random(3).shuffle(copies)
    rows = [{"prompt": text, "response": "An answer."} for text in clean] + copies  # originals first
    source = root / "mixed.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = root / "build.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "builder": "sft",
                "inputs": [{"path": str(source), "name": "mixed"}],
                "output": "datasets/sft",
                "num_shards": 1,
            }
        )
    )
    store = Store.open(str(root / "store"))
    evals = eval_index_for(SweepSpec(mmlu_dir="eval/data/mmlu", bench="eval/benches/truth106.jsonl"), HygieneSpec())
    manifest = run_builder(str(config), store, evals)
    kept = {m[0]["content"] for m in load_split(store, "datasets/sft")["messages"]}
    return {"clean": clean, "planted": planted, "manifest": manifest, "kept": kept}


def test_every_planted_row_is_dropped_and_every_clean_row_kept(planted):
    kept = planted["kept"]
    for kind, texts in planted["planted"].items():
        for text in texts:
            if text not in planted["clean"]:  # (an identical copy is kept once, as its original)
                assert text not in kept, (kind, text[:80])
    assert all(text in kept for text in planted["clean"])
    assert len(kept) == len(planted["clean"])


def test_the_manifest_counts_and_samples_what_was_dropped(planted):
    hygiene = planted["manifest"]["hygiene"]
    tally = hygiene["sources"]["mixed"]
    assert tally["exact_duplicates"] == 3 and tally["near_duplicates"] == 2
    assert tally["contaminated"] == {"mmlu": 3, "bench": 3}
    assert tally["rows_in"] == 60 + 11 and tally["kept"] == 60
    assert hygiene["eval_sets"]["items"]["bench"] == 106 and hygiene["eval_sets"]["items"]["mmlu"] > 1000
    samples = tally["samples"]
    assert len(samples["contaminated:bench"]) == 3 and samples["contaminated:mmlu"][0]["eval_item"].startswith(
        "philosophy"
    )
    assert samples["duplicate"] and all(
        s["where"].startswith(str(Path(s["where"]).parent)) for s in samples["duplicate"]
    )


def test_the_project_fixtures_share_nothing_with_the_bench_or_mmlu():
    """Against the bench and the shipped MMLU subset always, and all of MMLU where ../shared has it."""
    items = [EvalItem("bench", b["id"], b["prompt"]) for b in load_bench(REPO_ROOT / "eval/benches/truth106.jsonl")]
    items += mmlu_items_from(str(FULL_MMLU) if FULL_MMLU.is_dir() else "eval/data/mmlu")[0]
    index = EvalIndex(items)
    leaks = []
    for path in sorted((REPO_ROOT / "data_builders").rglob("*")):
        if path.suffix not in (".jsonl", ".txt") or "configs" in path.parts:
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            text = line if path.suffix == ".txt" else json.dumps(json.loads(line), ensure_ascii=False)
            hit = index.match(text.replace("\\n", " "))
            if hit:
                leaks.append(f"{path.relative_to(REPO_ROOT)}:{number} ~ {hit.eval_set} {hit.item_id}")
    assert not leaks, leaks
    assert len(items) > (14_000 if FULL_MMLU.is_dir() else 1_400)


def test_short_eval_items_are_matched_whole_and_long_ones_by_ngram():
    index = EvalIndex(
        [
            EvalItem("bench", "a", "What is the capital of France?"),
            EvalItem("mmlu", "b", " ".join(f"w{i}" for i in range(30))),
        ],
        n=13,
        min_item_words=4,
    )
    assert index.match("so, WHAT is the capital of france??").item_id == "a"
    assert index.match("what is the capital of spain") is None
    assert index.match("x " + " ".join(f"w{i}" for i in range(5, 18)) + " y").item_id == "b"  # 13 in a row
    assert index.match(" ".join(f"w{i}" for i in range(5, 17))) is None  # 12 are not enough
