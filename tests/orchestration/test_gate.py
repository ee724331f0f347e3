"""The gate against the input model, for real (Ray Train, DeepSpeed ZeRO-2, lm-eval, the bench runner):
an SFT stage that teaches a tiny model a small bench is promoted; a stage trained on top of it with a
far too high learning rate is not — the record, the line and the next stage's reference say so, the
incumbent stays `latest`, and `launch/promote.py --reason` can still overrule."""

import json
import sys

import pytest

from slm import REPO_ROOT, layout
from slm.errors import UserError
from slm.modeling import resolve_ref

pytestmark = pytest.mark.slow
sys.path.insert(0, str(REPO_ROOT / "launch"))


@pytest.fixture(scope="module")
def line(gated_line):
    return gated_line


@pytest.fixture(scope="module")
def hurt(gated_line):
    return gated_line["hurt"]


def test_a_stage_that_helps_its_input_is_promoted_with_the_input_as_baseline(line):
    selection = line["taught"]["selection"]
    assert "champion" in line["taught"] and selection.gate.passed, selection.gate.reason
    bench = next(t for t in selection.gate.tests if t.what == "bench")
    assert bench.candidate >= 10 and bench.input == 0, bench  # taught the small bench; the start knew nothing
    baseline = next(r for r in selection.candidates if r.kind == "precursor")
    assert baseline.status == "baseline" and baseline.name == "input model"  # a local directory, scored too
    report = line["store"].read_text(f"{layout.sweep_dir(line['taught']['record'].run_prefix)}/selection.md")
    assert "Gate (passed): checkpoint-120 vs input model" in report and "| bench:capitals | 6 |" in report


def test_pad_equal_to_eos_is_routed_and_named_in_record_checkpoint_and_card(line):
    store = line["store"]
    record = store.read_json(layout.run_record(line["taught"]["record"].run_prefix))  # as stored (redacted)
    assert record["pad"] == {
        "content": "<|pad|>",
        "id": 1,
        "how": "routed",
        "reason": "the tokenizer's pad token was its eos '<|endoftext|>'; routed to a token made for padding",
    }
    config = json.loads(store.read_text(f"{record['checkpoints'][-1]}/tokenizer_config.json"))
    assert config["pad_token"] == "<|pad|>" and config["eos_token"] == "<|endoftext|>"
    card = store.read_text(f"{line['taught']['champion'].key}/README.md")
    assert "| Pad token | `<\\|pad\\|>` (id 1), routed: the tokenizer's pad token was its eos" in card


def test_a_stage_that_hurts_its_input_is_not_promoted_and_the_incumbent_stays(line, hurt):
    store = line["store"]
    assert "champion" not in hurt
    verdict = hurt["not_promoted"]
    assert verdict.reason.startswith("not promoted: regresses vs its input model — ")
    assert "bench " in verdict.reason
    record = store.read_json(layout.run_record(hurt["record"].run_prefix))
    assert record["promotion"]["status"] == "not promoted"
    judged = store.read_json(layout.not_promoted("gate-test", "surgical"))["judged"]  # gate.json's shape
    assert judged["model"] == verdict.candidate and judged["passed"] is False
    failed = [t for t in judged["tests"] if not t["passed"]]
    assert any(t["kind"] == "binary" for t in failed) and any(t["kind"] == "continuous" for t in failed)
    assert all(t["effect"] < 0 and t["p"] < 0.05 for t in failed)
    latest = store.read_json(layout.latest_pointer("gate-test"))
    assert latest["version"] == line["taught"]["champion"].version == "v1-sft"
    assert [v for _, v in layout.versions(store, "gate-test")] == ["v1-sft"]
    with pytest.raises(
        UserError,
        match=r"no champion promoted yet from stage 'surgical'.*was not promoted: "
        r"regresses vs its input model.*launch/promote.py",
    ):
        resolve_ref("champion:gate-test:surgical", store)


def test_promote_with_a_reason_overrules_the_gate_and_the_card_says_so(line, hurt, capsys):
    from promote import main as promote

    run = hurt["record"].run_prefix
    store_args = ["--pipeline", "stages/pipeline.yaml", "--store", line["store"].uri, "--set", "line=gate-test"]
    with pytest.raises(SystemExit) as refused:
        promote([run, *store_args])
    assert refused.value.code != 0
    refusal = capsys.readouterr().err
    assert "checkpoint-6 was not promoted: regresses vs its input model — bench 0/12 vs 12/12" in refusal
    assert refusal.rstrip().endswith("give --reason to promote checkpoint-6 anyway")
    taught = line["taught"]["record"].run_prefix
    for bad, message in (
        (["--candidate", f"../../../{taught}/sweep/checkpoint-120"], "is not a candidate of"),
        (["--candidate", "input model"], "is not a candidate of"),
        ([], "is not a run key"),
    ):
        with pytest.raises(SystemExit):
            promote([run if bad else "runs/sft/../../etc", *bad, *store_args, "--reason", "forged"])
        assert message in capsys.readouterr().err
    promote([run, *store_args, "--reason", "testing the overrule"])
    latest = line["store"].read_json(layout.latest_pointer("gate-test"))
    assert latest["version"] == "v2-surgical"
    info = line["store"].read_json(layout.champion_info(latest["key"]))
    assert info["manual"] == {"overrules": "the gate against the input model", "reason": "testing the overrule"}
    assert info["precursor"]["version"] == "v1-sft"  # the lineage (and the card's chain) goes through the incumbent
    card = line["store"].read_text(f"{latest['key']}/README.md")
    assert "Promoted by hand, overruling the gate against the input model: testing the overrule" in card
    assert "Gate (**failed**)" in card


def test_a_damaged_copy_within_noise_on_counts_is_refused_on_the_answer_margins(line, tmp_path):
    """The evaluator's --baseline, for real: the taught champion re-saved passes every test; a copy
    with its weights perturbed (Gaussian noise, 0.5 of each tensor's spread) keeps its 0/1 counts
    within noise but loses answer likelihood on nearly every prompt: the continuous test refuses it."""
    import os
    import shutil
    import subprocess

    import torch
    from safetensors.torch import load_file, save_file

    from tests.support.gated_line import pipeline_overrides

    store = line["store"]
    champion = tmp_path / "champion"
    store.get_tree(line["taught"]["champion"].key, champion)
    resaved, damaged = tmp_path / "resaved", tmp_path / "damaged"
    for copy in (resaved, damaged):
        shutil.copytree(champion, copy, ignore=shutil.ignore_patterns("_COMPLETE.json", "SHA256SUMS"))
    weights = load_file(damaged / "model.safetensors")
    g = torch.Generator().manual_seed(0)
    noisy = {k: v + torch.randn(v.shape, generator=g) * 0.5 * v.float().std() for k, v in weights.items()}
    save_file(noisy, damaged / "model.safetensors", metadata={"format": "pt"})
    settings = [x for pair in pipeline_overrides(line["root"]) for x in ("--set", pair)]
    proc = subprocess.run(
        [sys.executable, "launch/evaluate.py", str(champion), str(resaved), str(damaged), "--baseline", str(champion)]
        + [
            "--name",
            "damage",
            "--store",
            str(tmp_path / "store"),
            *settings,
            "--set",
            "selection.gate.continuous=true",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "SLM_CACHE": str(tmp_path / "cache")},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    from slm.store import Store

    judged = {
        v["model"]: v for v in Store.open(str(tmp_path / "store")).read_json("evaluations/damage/gate.json")["judged"]
    }
    assert judged["resaved"]["passed"] and all(t["passed"] for t in judged["resaved"]["tests"])
    bad = judged["damaged"]
    binary = {t["name"]: t for t in bad["tests"] if t["kind"] == "binary"}
    margin = next(t for t in bad["tests"] if t["name"] == "bench-margin")
    assert binary["bench"]["passed"] and binary["MMLU"]["passed"], binary  # the counts see nothing
    assert not bad["passed"] and not margin["passed"] and margin["effect"] < -0.05 and margin["p"] < 0.05, margin
    print(
        f"damaged copy: bench {binary['bench']['effect']:+.1%} (p = {binary['bench']['p']:.2g}); "
        f"answer margin {margin['effect']:+.3f} nats/token (p = {margin['p']:.2g})"
    )
