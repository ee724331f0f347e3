"""The standalone evaluator, through its command line: two tiny models scored with real lm-eval in
Ray tasks, ranked and selected, the report in the store, scores shared through the cache; and the
mistakes a user makes stopped with one line before Ray starts."""

import json
import os
import subprocess
import sys

import pytest

from slm import REPO_ROOT
from slm.store import Store

BENCH = [
    {"id": "geo-01", "category": "geography", "prompt": "What is the capital of France?", "truth": ["Paris"]},
    {"id": "sci-01", "category": "science", "prompt": "What gas do plants absorb?", "truth": ["carbon dioxide", "CO2"]},
]


def evaluate(tmp_path, *args):
    env = {**os.environ, "SLM_CACHE": str(tmp_path / "cache")}
    return subprocess.run(
        [
            sys.executable,
            "launch/evaluate.py",
            *map(str, args),
            "--store",
            str(tmp_path / "store"),
            "--set",
            "sweep.subjects=[astronomy, marketing]",
            "--set",
            "sweep.limit=5",
            "--set",
            f"sweep.bench={tmp_path / 'bench.jsonl'}",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("evaluate")
    (root / "bench.jsonl").write_text("".join(json.dumps(item) + "\n" for item in BENCH))
    heldout = [{**item, "id": f"ho-{item['id']}", "prompt": "Tell me: " + item["prompt"]} for item in BENCH]
    (root / "heldout.jsonl").write_text("".join(json.dumps(item) + "\n" for item in heldout))
    drift = [{"id": f"d{k}", "prompt": p} for k, p in enumerate(["Describe a river.", "What is a chair?", "Hello!"])]
    (root / "drift.jsonl").write_text("".join(json.dumps(item) + "\n" for item in drift))
    return root, tiny_model_dir(seed=11), tiny_model_dir(seed=12)


def test_two_models_are_scored_selected_and_cached(models):
    root, a, b = models
    proc = evaluate(root, a, b, "--select", "--name", "pair")
    assert proc.returncode == 0, proc.stderr[-3000:]
    store = Store.open(str(root / "store"))
    report = store.read_json("evaluations/pair/sweep/selection.json")
    names = {r["name"] for r in report["candidates"]}
    assert names == {a.name, b.name} and report["champion"] in names
    for row in report["candidates"]:
        assert row["bench_total"] == 2 and 0 <= row["mmlu"] <= 1
        scores = store.read_json(f"evaluations/pair/sweep/{row['name']}.json")["scores"]
        assert scores["mmlu"]["n"] == 10 and len(scores["bench"]["items"]) == 2
    assert store.exists("evaluations/pair/sweep/selection.png")
    assert "| **" + report["champion"] + "** |" in store.read_text("evaluations/pair/sweep/selection.md")
    assert proc.stdout.strip().endswith("evaluations/pair/sweep/selection.md")

    # judged against a baseline with the stage gate's tests: the same model re-saved passes every test
    import shutil

    resaved = root / "a-resaved"
    shutil.copytree(a, resaved, dirs_exist_ok=True)
    judged = evaluate(
        root,
        a,
        resaved,
        b,
        "--baseline",
        a,
        "--name",
        "judged",
        *("--set", f"sweep.heldout={root / 'heldout.jsonl'}", "--set", f"sweep.drift={root / 'drift.jsonl'}"),
    )
    assert judged.returncode == 0, judged.stderr[-3000:]
    verdicts = store.read_json("evaluations/judged/gate.json")
    assert verdicts["baseline"] == str(a) and verdicts["alpha"] == 0.05
    by_model = {v["model"]: v for v in verdicts["judged"]}
    assert set(by_model) == {resaved.name, b.name}  # the baseline is not judged against itself
    same = by_model[resaved.name]
    assert same["passed"] and all(t["passed"] and t["effect"] == 0 and t["p"] == 1 for t in same["tests"])
    kinds = {t["name"]: t["kind"] for t in same["tests"]}
    assert list(kinds)[:2] == ["MMLU", "bench"] and kinds["MMLU"] == kinds["bench"] == "binary"
    assert kinds["MMLU-p(correct)"] == kinds["bench-margin"] == "continuous"
    # the held-out bench and the drift set: the re-saved copy teacher-forced on the baseline's own replies
    assert kinds["heldout"] == "binary" and kinds["heldout-margin"] == kinds["drift-loglik"] == "continuous"
    drift = next(t for t in same["tests"] if t["name"] == "drift-loglik")
    assert drift["n"] == 3 and drift["effect"] == 0 and drift["floor"] == 0.05
    base_scores = store.read_json(f"evaluations/judged/sweep/{a.name}.json")["scores"]
    other = store.read_json(f"evaluations/judged/sweep/{b.name}.json")["scores"]
    assert base_scores["drift"]["own"] and not other["drift"]["own"]
    assert other["drift"]["references"] == base_scores["drift"]["references"]
    assert len(base_scores["heldout"]["items"]) == 2
    assert f"{resaved.name} vs {a}: passed" in judged.stdout and "  pass  MMLU" in judged.stdout
    assert judged.stdout.strip().splitlines()[-2].endswith("evaluations/judged/gate.json")

    again = evaluate(root, a, "--name", "again")  # same weights, same settings: the cache answers
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"[sweep] {a.name}: cached scores" in again.stderr
    ranked = store.read_json("evaluations/again/sweep/selection.json")
    assert ranked["champion"] is None and ranked["candidates"][0]["status"] == "scored"


@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing-model", "model 'no/such/model': no such directory"),
        ("unreadable-bench", "bench.jsonl:1"),
        ("unknown-task", "unknown lm-eval task 'not_a_task'"),
    ],
)
def test_mistakes_stop_with_one_line_and_exit_2(models, case, expected):
    root, a, _ = models
    extra = []
    if case == "missing-model":
        extra = ["no/such/model"]
    elif case == "unreadable-bench":
        bad = root / case
        bad.mkdir(exist_ok=True)
        (bad / "bench.jsonl").write_text("{not json\n")
        root = bad
    else:
        extra = ["--set", "sweep.extra_tasks=[not_a_task]"]
    proc = evaluate(root, a, *extra)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
