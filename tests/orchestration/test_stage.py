"""`--set` routing: one meaning in every launcher, including the one name that is both a stage and a key."""

import pytest

from slm.errors import UserError
from slm.orchestration.stage import open_pipeline, route_overrides


def test_pipeline_keys_stage_keys_and_named_stages_are_routed():
    pipeline, stages, _ = route_overrides(
        ["cluster.workers=8", "train.lr=1e-5", "repair.train.seed=3", "sweep.subjects=[astronomy]"], stage="sft"
    )
    assert pipeline == {"cluster": {"workers": 8}, "sweep": {"subjects": ["astronomy"]}}
    assert stages == {"sft": {"train": {"lr": 1e-5}}, "repair": {"train": {"seed": 3}}}
    assert route_overrides(["train.lr=1e-5"])[1] == {"*": {"train": {"lr": 1e-5}}}  # a pipeline run: every stage


def test_dpo_is_a_stage_and_a_stage_key():
    assert route_overrides(["dpo.beta=0.2"], stage="dpo")[1] == {"dpo": {"dpo": {"beta": 0.2}}}
    assert route_overrides(["dpo.train.lr=1e-6"])[1] == {"dpo": {"train": {"lr": 1e-6}}}
    assert route_overrides(["dpo.dpo.loss_type=ipo"])[1] == {"dpo": {"dpo": {"loss_type": "ipo"}}}


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


def test_overrides_reach_the_stage_refs(tmp_path):
    pipeline, _ = open_pipeline(
        "stages/pipeline.yaml",
        str(tmp_path / "store"),
        ["train.max_steps=4", "repair.train.max_steps=9", "cluster.workers=1"],
    )
    sets = {ref.name: ref.set for ref in pipeline.stages}
    assert pipeline.cluster.workers == 1 and sets["repair"]["train"]["max_steps"] == 9
    assert all(sets[name]["train"]["max_steps"] == 4 for name in sets if name != "repair")
