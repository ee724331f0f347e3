"""`sweep.runs` and `sweep.reference`, for real (Ray Train, DeepSpeed ZeRO-2, lm-eval): a second SFT run
from the same input model is swept together with the finished one, and the better run's checkpoint
is chosen and promoted as that run's; a stronger-or-not model named as the reference is scored beside
them as a ceiling row that is never a candidate."""

import shutil

import pytest

from slm import layout
from slm.config import SweepSpec
from slm.errors import UserError
from slm.orchestration.sweeping import other_runs
from slm.refs import LocalRef

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def swept(gated_line, tiny_model_dir, tmp_path_factory):
    import os

    import ray

    from slm.orchestration.stage import run_stage
    from slm.store import Store

    root = tmp_path_factory.mktemp("sweep-runs")
    shutil.copytree(gated_line["pristine"], root / "store")
    store = Store.open(str(root / "store"))
    taught = gated_line["taught"]["record"]
    reference = tiny_model_dir(seed=11)
    pipeline = gated_line["pipeline"]
    pipeline = pipeline.model_copy(
        update={
            "line": "runs-test",  # a line with no champion yet: the chosen checkpoint is really promoted
            "store": store.uri,
            "sweep": pipeline.sweep.model_copy(update={"runs": {"sft": [taught.run_id]}, "reference": str(reference)}),
        }
    )
    # the same input model, trained far less: the finished run's checkpoint should win the sweep
    short = {
        "model": {"init": str(gated_line["start"])},
        "data": {"dataset": "datasets/facts"},
        "train": {"lr": 1e-4, "warmup_steps": 0, "max_steps": 4, "save_steps": 2, "micro_batch": 12, "init_gate": None},
    }
    old_cache = os.environ.get("SLM_CACHE")
    os.environ["SLM_CACHE"] = str(gated_line["root"] / "cache")
    try:
        result = run_stage(pipeline, "sft", store, short)
    finally:
        ray.shutdown()
        if old_cache is None:
            os.environ.pop("SLM_CACHE", None)
        else:
            os.environ["SLM_CACHE"] = old_cache
    return {"result": result, "store": store, "taught": taught, "pipeline": pipeline, "reference": reference}


def test_another_run_of_the_stage_is_swept_and_its_checkpoint_promoted_as_its_own(swept):
    store, taught, result = swept["store"], swept["taught"], swept["result"]
    selection, record = result["selection"], result["record"]
    assert record.run_id != taught.run_id
    names = {r.name: r for r in selection.candidates}
    other = f"{taught.run_id}/checkpoint-120"
    assert {"checkpoint-2", "checkpoint-4", other} <= set(names), sorted(names)
    assert names[other].run == taught.run_prefix and names["checkpoint-2"].run is None
    assert selection.champion == other, [(r.name, r.status, r.bench_passed) for r in selection.candidates]
    assert selection.gate.passed and selection.gate.candidate == other
    info = store.read_json(layout.champion_info(result["champion"].key))
    assert info["run_id"] == taught.run_id and info["run_record"] == layout.run_record(taught.run_prefix)
    assert info["selection"] == layout.selection_report(record.run_prefix)  # chosen by this run's sweep
    assert info["candidate"] == other
    card = store.read_text(f"{result['champion'].key}/README.md")
    assert f"and of the other runs of the stage swept with it ({taught.run_prefix})" in card
    assert "| Steps | 120 (save every 120)" in card  # the card describes the run that trained it, not this one


def test_the_reference_is_a_ceiling_row_scored_beside_never_a_candidate(swept):
    selection, store = swept["result"]["selection"], swept["store"]
    name = f"reference ({swept['reference']})"
    row = selection.row(name)
    assert row.status == "ceiling" and row.kind == "reference"
    assert "not a candidate" in row.reason and selection.champion != name
    assert selection.gate.candidate != name and selection.gate.input_model != name
    report = store.read_text(layout.selection_file(layout.sweep_dir(swept["result"]["record"].run_prefix), "md"))
    assert name in report and "ceiling" in report
    card = store.read_text(f"{swept['result']['champion'].key}/README.md")
    assert f"and {name} as a ceiling (scored, never a candidate)" in card and "| ceiling |" in card


def test_runs_that_cannot_be_swept_together_are_refused_in_one_line(gated_line, swept, tiny_model_dir):
    store, taught = swept["store"], swept["taught"]
    pipeline = swept["pipeline"]
    this = swept["result"]["record"]

    def runs(ids):
        return pipeline.model_copy(update={"sweep": pipeline.sweep.model_copy(update={"runs": {"sft": ids}})})

    with pytest.raises(UserError, match=r"sweep.runs.sft: run sft-0000000000 not found"):
        other_runs(runs(["sft-0000000000"]), this, store)
    elsewhere = tiny_model_dir(seed=12)
    moved = this.model_copy(update={"init": LocalRef(spec=str(elsewhere), local=str(elsewhere))})
    with pytest.raises(UserError, match=r"started from another init .* only runs from the same input model"):
        other_runs(runs([taught.run_id]), moved, store)
    assert other_runs(runs([this.run_id]), this, store) == []  # itself: swept anyway, not twice
    with pytest.raises(ValueError, match=r"not a run id of sft"):
        SweepSpec(runs={"sft": ["repair-0123456789"]})
