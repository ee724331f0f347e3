"""The `slm` command: one entry point over every tool, the same options everywhere, and the two ways
to see what a command would do before it does it (--print-config, --dry-run)."""

import os
import subprocess
import sys
from pathlib import Path

import yaml

from slm import REPO_ROOT

SLM = str(Path(sys.executable).parent / "slm")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def slm(*args, cwd=REPO_ROOT):
    return subprocess.run([SLM, *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=ENV)


def test_help_lists_every_command_and_each_has_the_shared_options():
    from slm.launch.cli import COMMANDS

    top = slm("--help")
    assert top.returncode == 0 and all(f"  {name}" in top.stdout for name in COMMANDS)
    for name in ("pipeline", "stage", "build-data", "evaluate", "promote"):
        proc = slm(name, "--help")
        assert proc.returncode == 0 and proc.stdout.startswith(f"usage: slm {name}"), proc.stderr
        for option in ("--config", "--store", "--set", "--print-config", "--dry-run"):
            assert option in proc.stdout, (name, option)
    unknown = slm("train")
    assert unknown.returncode == 2 and "unknown command 'train'" in unknown.stderr


def test_print_config_is_the_resolved_validated_config_after_set():
    proc = slm(
        "stage",
        "sft",
        "--print-config",
        "--set",
        "train.lr=2e-4",
        "--set",
        "train.warmup_ratio=0.1",
        "--set",
        "train.warmup_steps=0",
        "--set",
        "train.extra={adam_beta2: 0.95}",
        "--set",
        "cluster.workers=4",
    )
    assert proc.returncode == 0, proc.stderr
    config = yaml.safe_load(proc.stdout)
    assert config["pipeline"]["cluster"]["workers"] == 4 and list(config["stages"]) == ["sft"]
    train = config["stages"]["sft"]["config"]["train"]
    assert train["lr"] == 2e-4 and train["warmup_ratio"] == 0.1 and train["extra"] == {"adam_beta2": 0.95}
    assert train["gradient_checkpointing"] is False and train["save_steps"] == 30  # defaults and the file's values
    assert config["stages"]["sft"]["builders"]["data_builders/configs/sft.yaml"]["output"] == "datasets/sft"


def test_dry_run_says_what_would_happen_and_touches_nothing(tmp_path):
    store = tmp_path / "store"
    proc = slm(
        "pipeline",
        "--dry-run",
        "--store",
        str(store),
        "--set",
        "sweep.limit=5",
        "--set",
        "surgical.train.gradient_checkpointing=true",
        "--set",
        "sweep.heldout=eval/benches/heldout_facts.jsonl",
        "--set",
        "sweep.drift=eval/benches/drift_prompts.jsonl",
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "the held-out bench eval/benches/heldout_facts.jsonl (66 prompts)" in out
    assert "the drift set eval/benches/drift_prompts.jsonl (40 prompts)" in out
    assert "heldout ≥ 11.7 points (n=66)" in out and "heldout:person ≥ 33.6 points (n=22)" in out
    for stage, version in zip(("pretrain", "sft", "distill", "surgical", "repair"), range(1, 6)):
        assert f"\n[{stage}]" in out and f"as tiny-ff@v{version}-{stage}" in out
    assert "build   datasets/sft (sft builder, new)" in out and "ZeRO-2 (ds_configs/zero2.json)" in out
    assert "6 of 57 subjects, 5 items each" in out and "(106 prompts)" in out
    assert out.count("with gradient_checkpointing") == 1
    assert out.rstrip().endswith("dry run: nothing was started or written")
    assert not store.exists(), "a dry run wrote to the store"
    assert "[ray]" not in proc.stderr


def test_a_bad_knob_is_refused_by_the_dry_run_before_anything_starts():
    for override, message in (
        ("train.extra={learning_rate: 1.0}", "train.extra.learning_rate is set by the pipeline (train.lr)"),
        ("train.extra={not_a_field: 1}", "train.extra.not_a_field is not a TrainingArguments field"),
        ("train.extra={hub_strategy: sometimes}", "TrainingArguments refuses it"),
        ("train.optim=adamw_nonesuch", "is not an HF Trainer optimizer"),
        ("train.attn_implementation=fast", "attn_implementation"),
    ):
        proc = slm("stage", "sft", "--dry-run", "--set", override)
        assert proc.returncode == 2 and message in proc.stderr, (override, proc.stderr[-500:])
        assert "Traceback" not in proc.stderr


def test_the_documented_script_and_module_forms_still_work(tmp_path):
    script = subprocess.run(
        [sys.executable, "launch/stage.py", "pretrain", "--dry-run", "--store", str(tmp_path / "s")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
    )
    assert script.returncode == 0 and "[pretrain]" in script.stdout, script.stderr
    # repair alone on an empty store: its init (the surgical champion) is not there, and the dry run says so
    script = subprocess.run(
        [sys.executable, "launch/stage.py", "repair", "--dry-run", "--store", str(tmp_path / "s")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
    )
    assert script.returncode == 2 and "no champion promoted yet from stage 'surgical'" in script.stderr, script.stderr
    module = subprocess.run(
        [sys.executable, "-m", "slm.launch.stage", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
    )
    assert module.returncode == 0 and "--dry-run" in module.stdout, module.stderr


def test_build_data_and_evaluate_dry_runs(tmp_path, tiny_model_dir):
    store = tmp_path / "store"
    built = slm("build-data", "sft", "repair", "--dry-run", "--store", str(store))
    assert built.returncode == 0, built.stderr
    assert (
        "build   datasets/sft (sft builder, new)" in built.stdout and "datasets/repair (repair builder" in built.stdout
    )
    model = str(tiny_model_dir(seed=3))
    scored = slm("evaluate", model, "--select", "--dry-run", "--store", str(store))
    assert scored.returncode == 0, scored.stderr
    assert scored.stdout.startswith(f"score {model} on MMLU (6 of 57 subjects")
    assert "and choose a champion" in scored.stdout and not store.exists()
    # the dry run resolves what the real run would: no champion yet on a fresh store
    refused = slm("evaluate", "champion:tiny-ff", "--dry-run", "--store", str(store))
    assert refused.returncode == 2 and "no champion promoted yet for line 'tiny-ff'" in refused.stderr
    assert not store.exists()


def test_the_dry_run_counts_parameters_and_refuses_a_stage_that_cannot_fit_the_gpus(tmp_path):
    """The FF_3.13 shape (GPT-2, hidden 2048, 38 layers, 16 heads, context 1024, 50,257 tokens) on 8 GPUs
    of 24 GB under ZeRO-2 bf16: micro-batch 8 does not fit, micro-batch 2 does; counted on the meta device."""
    shape = "{model_type: gpt2, n_embd: 2048, n_layer: 38, n_head: 16, n_positions: 1024, vocab_size: 50257}"
    common = ["pipeline", "--dry-run", "--only", "pretrain", "--store", str(tmp_path / "store")]
    common += [
        "--set",
        "cluster={workers: 8, use_gpu: true, gpu_memory_gb: 24}",
        "--set",
        f"pretrain.model.architecture={shape}",
    ]
    common += ["--set", "pretrain.data.max_length=1024", "--set", "pretrain.train.precision=bf16"]
    too_big = slm(*common, "--set", "pretrain.train.micro_batch=8")
    assert too_big.returncode == 2 and "Traceback" not in too_big.stderr, too_big.stderr[-2000:]
    assert "pretrain: the estimate 34.4 GB per GPU does not fit cluster.gpu_memory_gb 24" in too_big.stderr
    assert "lower train.micro_batch" in too_big.stderr
    fits = slm(*common, "--set", "pretrain.train.micro_batch=2")
    assert fits.returncode == 0, fits.stderr[-2000:]
    (line,) = [line for line in fits.stdout.splitlines() if line.startswith("  memory")]
    assert (
        line.startswith("  memory  2.02B parameters; ~15.0 GB per worker (model states 8.6 GB") and "fits 24 GB" in line
    )
