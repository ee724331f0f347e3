"""`--set` routing: one meaning in every launcher, including the one name that is both a stage and a key."""

import pytest

from slm.errors import UserError
from slm.orchestration.stage import open_pipeline, route_overrides


def test_pipeline_keys_stage_keys_and_named_stages_are_routed():
    pipeline, stages = route_overrides(
        ["cluster.workers=8", "train.lr=1e-5", "repair.train.seed=3", "sweep.subjects=[astronomy]"], stage="sft"
    )
    assert pipeline.values == {"cluster": {"workers": 8}, "sweep": {"subjects": ["astronomy"]}}
    assert values(stages) == {"sft": {"train": {"lr": 1e-5}}, "repair": {"train": {"seed": 3}}}
    assert stages["repair"].origins == {("train", "seed"): "--set repair.train.seed=3"}
    assert values(route_overrides(["train.lr=1e-5"])[1]) == {"*": {"train": {"lr": 1e-5}}}  # a pipeline run


def values(stages) -> dict:
    return {name: override.values for name, override in stages.items()}


def test_dpo_is_a_stage_and_a_stage_key():
    assert values(route_overrides(["dpo.beta=0.2"], stage="dpo")[1]) == {"dpo": {"dpo": {"beta": 0.2}}}
    assert values(route_overrides(["dpo.train.lr=1e-6"])[1]) == {"dpo": {"train": {"lr": 1e-6}}}
    assert values(route_overrides(["dpo.dpo.loss_type=ipo"])[1]) == {"dpo": {"dpo": {"loss_type": "ipo"}}}


@pytest.mark.parametrize(
    "pair, message",
    [
        ("repair=3", "name a key of the repair stage"),
        ("repair.lrr=3", "name a key of the repair stage"),
        ("gpus=8", "'gpus' is neither a pipeline key"),
    ],
)
def test_what_is_no_key_is_named(pair, message):
    with pytest.raises(UserError, match=message):
        route_overrides([pair])


def test_overrides_reach_the_stage_configs_beside_the_pipeline(tmp_path):
    pipeline, _, stages = open_pipeline(
        "stages/pipeline.yaml",
        str(tmp_path / "store"),
        ["train.max_steps=4", "repair.train.max_steps=9", "cluster.workers=1"],
    )
    steps = {ref.name: stages.config(pipeline, ref.name).train.max_steps for ref in pipeline.stages}
    assert pipeline.cluster.workers == 1 and steps["repair"] == 9
    assert all(steps[name] == 4 for name in steps if name != "repair")
    # the pipeline config is the file's (and pipeline keys'): stage overrides travel beside it
    assert all(
        "max_steps" not in ref.set.get("train", {}) or ref.set["train"]["max_steps"] not in (4, 9)
        for ref in pipeline.stages
    )
    assert stages.config(pipeline, "repair") is stages.config(pipeline, "repair")  # read and validated once
