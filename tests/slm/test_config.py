"""Every config in the repo loads; bad configs fail with one line naming the file and the key."""

from pathlib import Path

import pytest

from slm import REPO_ROOT, STAGE_ORDER
from slm.config import BuilderConfig, PipelineConfig, StageConfig, deep_merge, load_yaml_config, parse_overrides
from slm.errors import UserError

STAGE_CONFIGS = sorted((REPO_ROOT / "stages" / "configs").glob("*.yaml"))
BUILDER_CONFIGS = sorted((REPO_ROOT / "data_builders" / "configs").glob("*.yaml"))
EXAMPLES = REPO_ROOT / "stages" / "examples"
PIPELINES = [
    REPO_ROOT / "stages" / "pipeline.yaml",
    *sorted(EXAMPLES.glob("*.yaml")),
    *sorted(EXAMPLES.glob("*/pipeline.yaml")),
]


def test_repo_has_every_stage_config():
    assert {p.stem for p in STAGE_CONFIGS} == set(STAGE_ORDER)


@pytest.mark.parametrize("path", STAGE_CONFIGS, ids=lambda p: p.name)
def test_stage_configs_load(path):
    cfg = load_yaml_config(path, StageConfig)
    assert cfg.stage == path.stem
    assert (REPO_ROOT / cfg.deepspeed).is_file()


@pytest.mark.parametrize("path", BUILDER_CONFIGS, ids=lambda p: p.name)
def test_builder_configs_load(path):
    cfg = load_yaml_config(path, BuilderConfig)
    assert all((REPO_ROOT / i.path).is_file() for i in cfg.inputs)


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.name)
def test_pipeline_configs_load_with_their_stage_overrides(path):
    pipeline = load_yaml_config(path, PipelineConfig)
    for ref in pipeline.stages:
        cfg = load_yaml_config(ref.config, StageConfig, ref.set)
        assert cfg.stage == ref.name
        for builder in ref.builders:
            load_yaml_config(builder, BuilderConfig)


def write(tmp_path, text):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_unknown_key_is_named_with_file(tmp_path):
    src = (REPO_ROOT / "stages/configs/repair.yaml").read_text().replace("  lr: 2.5e-4", "  lr: 2.5e-4\n  lrr: 1")
    path = write(tmp_path, src)
    with pytest.raises(UserError) as err:
        load_yaml_config(path, StageConfig)
    assert str(path) in str(err.value) and "unknown key 'train.lrr'" in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_key_and_bad_value_are_named(tmp_path):
    path = write(
        tmp_path,
        "stage: sft\nobjective: chat_sft\nmodel: {init: x}\ndata: {dataset: d}\n"
        "train: {lr: -1, save_steps: 5, micro_batch: 2}\n",
    )
    with pytest.raises(UserError, match=r"train\.lr: Input should be greater than 0"):
        load_yaml_config(path, StageConfig)
    path = write(
        tmp_path, "stage: sft\nobjective: chat_sft\nmodel: {init: x}\ntrain: {lr: 1, save_steps: 5, micro_batch: 2}\n"
    )
    with pytest.raises(UserError, match="missing key 'data'"):
        load_yaml_config(path, StageConfig)


def test_objective_must_fit_stage_and_scratch_needs_architecture(tmp_path):
    base = "data: {dataset: d}\ntrain: {lr: 1, save_steps: 5, micro_batch: 2}\n"
    with pytest.raises(UserError, match="trains with objective 'chat_sft'"):
        load_yaml_config(write(tmp_path, "stage: sft\nobjective: causal_lm\nmodel: {init: x}\n" + base), StageConfig)
    with pytest.raises(UserError, match="init: scratch needs both"):
        load_yaml_config(
            write(tmp_path, "stage: pretrain\nobjective: causal_lm\nmodel: {init: scratch}\n" + base), StageConfig
        )


def test_pipeline_rejects_out_of_order_stages_and_unknown_stage(tmp_path):
    path = write(tmp_path, "line: x\nstore: s\nstages:\n  - {name: repair, config: a}\n  - {name: sft, config: b}\n")
    with pytest.raises(UserError, match="stages must run in the order"):
        load_yaml_config(path, PipelineConfig)
    pipeline = load_yaml_config(REPO_ROOT / "stages/pipeline.yaml", PipelineConfig)
    with pytest.raises(UserError, match="unknown stage 'dpo'"):
        pipeline.stage("dpo")


def test_overrides_parse_and_merge():
    assert parse_overrides(["train.lr=1e-4", "data.max_length=64", "model.init=champion:x"]) == {
        "train": {"lr": 1e-4},
        "data": {"max_length": 64},
        "model": {"init": "champion:x"},
    }
    assert deep_merge({"a": {"b": 1, "c": 2}}, {"a": {"b": 3}}) == {"a": {"b": 3, "c": 2}}
    with pytest.raises(UserError, match="key.path=value"):
        parse_overrides(["nonsense"])


def test_invalid_yaml_and_missing_file(tmp_path):
    with pytest.raises(UserError, match="not valid YAML"):
        load_yaml_config(write(tmp_path, "a: [1,"), StageConfig)
    with pytest.raises(UserError, match="config file not found"):
        load_yaml_config(Path(tmp_path / "nope.yaml"), StageConfig)


def test_method_options_only_where_they_apply(tmp_path):
    base = "model: {init: x}\ndata: {dataset: d}\ntrain: {lr: 1, save_steps: 5, micro_batch: 2}\n"
    with pytest.raises(UserError, match="kl_anchor and lora are options of the fine-tuning stages"):
        load_yaml_config(write(tmp_path, "stage: pretrain\nobjective: causal_lm\nlora: {r: 4}\n" + base), StageConfig)
    with pytest.raises(UserError, match="logit_distill is an option of the distill stage"):
        load_yaml_config(
            write(tmp_path, "stage: sft\nobjective: chat_sft\nlogit_distill: {teacher: t}\n" + base), StageConfig
        )
    with pytest.raises(UserError, match="kl_anchor.coef"):
        load_yaml_config(
            write(tmp_path, "stage: sft\nobjective: chat_sft\nkl_anchor: {coef: -1}\n" + base), StageConfig
        )
    with pytest.raises(UserError, match="unknown key 'lora.rank'"):
        load_yaml_config(write(tmp_path, "stage: sft\nobjective: chat_sft\nlora: {rank: 4}\n" + base), StageConfig)
    with pytest.raises(UserError, match="dpo is already anchored"):
        load_yaml_config(write(tmp_path, "stage: dpo\nobjective: dpo\nkl_anchor: {coef: 1}\n" + base), StageConfig)
    cfg = load_yaml_config(
        write(
            tmp_path,
            "stage: repair\nobjective: chat_sft\nkl_anchor: {coef: 0.03, start_step: 200, "
            "warmup_steps: 300, last_k_tokens: 128}\nlora: {r: 8}\n" + base,
        ),
        StageConfig,
    )
    assert cfg.kl_anchor.last_k_tokens == 128 and cfg.lora.target_modules == "all-linear"


def test_an_optional_feature_without_its_package_names_the_extra(monkeypatch):
    import importlib.util

    import pytest

    from slm.errors import UserError, require_extra

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "trl" else real(name, *a))
    with pytest.raises(
        UserError,
        match=r"the dpo stage needs the trl package, which is not installed: "
        r"pip install 'slm-pipeline\[dpo\]'",
    ):
        require_extra("trl", "dpo", "the dpo stage")
    require_extra("peft", "lora", "lora")  # installed here: no error


def test_new_train_knobs_at_their_defaults_leave_run_ids_as_they_were():
    """A config that does not use the knobs added later hashes as it did before they existed."""
    import hashlib
    import json

    from slm.config import StageConfig, config_digest, load_yaml_config

    cfg = load_yaml_config("stages/configs/sft.yaml", StageConfig)
    before = cfg.model_dump(mode="json")
    for key in (
        "warmup_ratio",
        "gradient_checkpointing",
        "attn_implementation",
        "optim",
        "extra",
        "init_gate",
        "early_stopping",
        "loss",
    ):
        del before["train"][key]
    old = hashlib.sha256(json.dumps(before, sort_keys=True, default=str).encode()).hexdigest()[:10]
    assert config_digest(cfg) == old
    used = load_yaml_config("stages/configs/sft.yaml", StageConfig, {"train": {"gradient_checkpointing": True}})
    assert config_digest(used) != old


def test_new_builder_input_keys_at_their_defaults_leave_build_digests_as_they_were():
    import hashlib
    import json

    from slm.config import BuilderConfig, config_digest, load_yaml_config

    cfg = load_yaml_config("data_builders/configs/repair.yaml", BuilderConfig)
    before = cfg.model_dump(mode="json")
    for item in before["inputs"]:
        del item["columns"], item["max_answer_chars"], item["field"]
    old = hashlib.sha256(json.dumps(before, sort_keys=True, default=str).encode()).hexdigest()[:10]
    assert config_digest(cfg) == old
    used = load_yaml_config(
        "data_builders/configs/repair.yaml", BuilderConfig, {"inputs": [{"path": "x", "max_answer_chars": 9}]}
    )
    assert config_digest(used) != old
