"""The whole pipeline on a real S3 server (SeaweedFS), real Ray, real DeepSpeed, real lm-eval and mergekit.

Five stages of a tiny GPT-2, shortened through the pipeline's per-stage overrides; then the same
pipeline again through the `slm` command, which must find every run finished and promote nothing new.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from slm import REPO_ROOT
from slm.store import Store

FIXTURE = REPO_ROOT / "tests/fixtures/make_run_store"

pytestmark = pytest.mark.slow
STAGES = ["pretrain", "sft", "distill", "surgical", "repair"]


def pipeline_config(tmp_path):
    config = yaml.safe_load((REPO_ROOT / "stages/pipeline.yaml").read_text())
    short = {
        "pretrain": {
            "model": {
                "architecture": {"model_type": "gpt2", "n_layer": 2, "n_embd": 64, "n_head": 2, "n_positions": 256}
            },
            "train": {"max_steps": 20, "save_steps": 10},
        }
    }
    for ref in config["stages"]:
        ref["set"] = short.get(ref["name"], {"train": {"max_steps": 8, "save_steps": 4}})
    config["sweep"].update(subjects=["astronomy", "philosophy"], limit=4)
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_pipeline(config, store_uri, env, command=(sys.executable, "launch/pipeline.py")):
    return subprocess.run(
        [*command, "--config", str(config), "--store", store_uri],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=1500,
        env=env,
    )


def test_pipeline_end_to_end_on_s3(tmp_path, s3_env):
    env = {**os.environ, "SLM_CACHE": str(tmp_path / "cache")}
    config = pipeline_config(tmp_path)
    proc = run_pipeline(config, s3_env, env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    store = Store.open(s3_env)

    # a promoted champion that loads and generates
    latest = store.read_json("champions/tiny-ff/latest.json")
    assert latest["stage"] == "repair" and store.url(latest["key"]) in proc.stdout.splitlines()
    local = tmp_path / "champion"
    store.get_tree(latest["key"], local)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tok = AutoModelForCausalLM.from_pretrained(local), AutoTokenizer.from_pretrained(local)
    inputs = tok.apply_chat_template(
        [{"role": "user", "content": "Capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**inputs, max_new_tokens=5, min_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 5
    assert (local / "SHA256SUMS").is_file() and (local / "champion.json").is_file()

    # the model card, generated from the records
    card = (local / "README.md").read_text()
    assert card.startswith("---\n") and "model-index:" in card and "pipeline_tag: text-generation" in card
    for stage in STAGES:
        assert f"— {stage} (tiny-ff@" in card
    assert "a subset, not full MMLU" in card and "DeepSpeedEngine · ZeRO stage 2 · 2 workers" in card
    # its plots travel with it, are embedded, and the summary printed where they are
    for name in ("history", "loss", "selection"):
        assert (local / "plots" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"![{name}](plots/{name}.png)" in card
        assert f"{store.url(latest['key'])}/plots/{name}.png  ({name})" in proc.stderr
    assert "license: apache-2.0" in card and "the project's default for weights trained from scratch" in card

    # every stage: DeepSpeed ZeRO-2 in 2 Ray Train workers, loss fell, every checkpoint scored
    import deepspeed

    versions = [v for v in store.children("champions/tiny-ff") if v.startswith("v")]
    assert sorted(versions) == sorted(f"v{i}-{s}" for i, s in enumerate(STAGES, 1))
    for stage in STAGES:
        (run_id,) = store.children(f"runs/{stage}")
        prefix = f"runs/{stage}/{run_id}"
        record = store.read_json(f"{prefix}/record.json")
        assert record["status"] == "finished"
        assert record["engine"]["engine"] == "DeepSpeedEngine" and record["engine"]["zero_stage"] == 2
        assert record["engine"]["world_size"] == 2 and record["engine"]["deepspeed"] == deepspeed.__version__
        assert record["deepspeed"]["config"]["zero_optimization"]["stage"] == 2
        assert record["training"]["loss_fell"], record["training"]
        assert record["data"]["splits"]["train"]["rows"] > 0 and record["versions"]["ray"]
        checkpoints = sorted(store.children(f"{prefix}/checkpoints"), key=lambda n: int(n.rsplit("-", 1)[1]))
        assert len(checkpoints) == 2
        for name in checkpoints:
            manifest = store.tree_manifest(f"{prefix}/checkpoints/{name}")
            assert "model.safetensors" in manifest["files"]
            # keep_optimizer_states=1: only the last checkpoint keeps DeepSpeed's resume state
            resumable = any(f.startswith("global_step") for f in manifest["files"])
            assert resumable == (name == checkpoints[-1]) and ("pruned" in manifest) == (not resumable)
            scores = store.read_json(f"{prefix}/sweep/{name}.json")["scores"]
            assert scores["mmlu"]["n"] == 8 and scores["bench"]["total"] == 106
        storage = record["storage"]
        assert storage["resumable_checkpoints"] == [f"{prefix}/checkpoints/{checkpoints[-1]}"]
        assert storage["bytes_freed"] == storage["pruned"][0]["bytes"] > 0
        assert store.exists(f"{prefix}/train/loss.png") and store.exists(f"{prefix}/train/train_log.csv")
        for artifact in ("selection.json", "selection.md", "selection.png"):
            assert store.exists(f"{prefix}/sweep/{artifact}")
        if stage != "pretrain":
            assert store.exists(f"{prefix}/sweep/slerp-t0.1.json")
        # the typed records write the layout a make-run store has always had (tests/fixtures/make_run_store)
        (known,) = (FIXTURE / "runs" / stage).glob("*/record.json")
        known = json.loads(known.read_text())
        # fields added since, each written only where it applies: the step-0 init gate (not on pretrain from
        # scratch, nor where a config turns it off), and the engine's planned steps, device name, packing,
        # the workers' niceness and each rank's node
        assert set(record) - {"init_gate"} == set(known) and set(record["init"]) == set(known["init"]), stage
        assert ("init_gate" in record) == (stage in ("sft", "distill")), stage
        assert set(record["data"]) == set(known["data"]), stage
        added = {"planned_steps", "device_name", "packing", "niceness", "worker_nodes"}
        assert set(record["engine"]) - added == set(known["engine"]), stage
        assert record["engine"]["niceness"] == 0 and record["engine"]["worker_nodes"] == ["127.0.0.1"] * 2, stage
        packing = record["engine"]["packing"]  # on by default for every stage of the tiny GPT-2 line
        assert packing["examples"] >= packing["rows"] > 0 and 0 < packing["fill"] <= 1, stage
    champion, known = (
        store.read_json(f"{latest['key']}/champion.json"),
        json.loads((FIXTURE / "champions/tiny-ff/v5-repair/champion.json").read_text()),
    )
    # the held-out bench's summary (sweep.heldout, on in the default pipeline since) sits after mmlu
    assert list(champion) == list(known) and [k for k in champion["scores"] if k != "heldout"] == list(known["scores"])
    assert champion["scores"]["heldout"]["total"] == 66 and "items" not in champion["scores"]["heldout"]
    assert set(champion["scores"]["mmlu"]) == set(known["scores"]["mmlu"]) | {"dev"}  # no per-item answers; the dev row
    # the bench summary now also keeps the in-form count and the format report (eval/bench.py)
    assert set(champion["scores"]["bench"]) == set(known["scores"]["bench"]) | {"form", "formats"}

    # re-running finds every run finished: nothing trained, nothing promoted twice
    again = run_pipeline(config, s3_env, env, command=(str(Path(sys.executable).parent / "slm"), "pipeline"))
    assert again.returncode == 0, again.stderr[-4000:]
    assert again.stderr.count("already finished; not training again") == 5
    assert "training on 2 Ray Train workers" not in again.stderr
    assert sorted(v for v in store.children("champions/tiny-ff") if v.startswith("v")) == sorted(versions)

    # the card can be regenerated from the records alone, and a person can overrule the selection
    card_proc = subprocess.run(
        [sys.executable, "launch/card.py", "--store", s3_env],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert card_proc.returncode == 0 and card_proc.stdout == card, card_proc.stderr[-2000:]
    (repair_run,) = store.children("runs/repair")
    selection = store.read_json(f"runs/repair/{repair_run}/sweep/selection.json")
    other = next(
        c["name"] for c in selection["candidates"] if c["kind"] == "checkpoint" and c["name"] != selection["champion"]
    )
    promote = [
        sys.executable,
        "launch/promote.py",
        f"runs/repair/{repair_run}",
        "--candidate",
        other,
        "--store",
        s3_env,
    ]
    refused = subprocess.run(promote, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert refused.returncode == 2 and "give --reason" in refused.stderr
    manual = subprocess.run(
        promote + ["--reason", "better on the held-out set"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert manual.returncode == 0, manual.stderr[-2000:]
    latest = store.read_json("champions/tiny-ff/latest.json")
    assert latest["version"] == "v6-repair"
    info = store.read_json(f"{latest['key']}/champion.json")
    assert info["candidate"] == other and info["manual"] == {
        "overrules": f"the selection ({selection['champion']})",
        "reason": "better on the held-out set",
    }
