"""Run bookkeeping that needs no training: a rerun on another worker count, and what experiments record."""

import pytest

from slm.errors import UserError
from slm.store import COMPLETE, Store


def unfinished_run(store, run_id, workers, identity="abc", checkpoint=True):
    """A run record as training writes it (a make-run store's, tests/fixtures), left unfinished."""
    import json

    from slm import REPO_ROOT

    (fixture,) = (REPO_ROOT / "tests/fixtures/make_run_store/runs/pretrain").glob("*/record.json")
    record = json.loads(fixture.read_text())
    prefix = f"runs/pretrain/{run_id}"
    record.update(run_id=run_id, run_prefix=prefix, status="running", resume_identity=identity)
    record["cluster"]["workers"] = workers
    record["deepspeed"]["zero_stage"] = 2
    store.write_json(f"{prefix}/record.json", record)
    if checkpoint:
        store.write_json(f"{prefix}/checkpoints/checkpoint-30/trainer_state.json", {})
        store.write_json(f"{prefix}/checkpoints/checkpoint-30/{COMPLETE}", {"files": {}})


def test_rerun_on_another_worker_count_is_refused_with_what_to_do(tmp_path):
    from slm.orchestration.training import refuse_other_world_size

    store = Store.open(str(tmp_path))
    unfinished_run(store, "pretrain-aaaa", workers=2)
    with pytest.raises(
        UserError,
        match=r"run pretrain-aaaa of this config stopped at checkpoint-30 on 2 workers; "
        r"resuming it on 4 is not supported \(ZeRO-2 .* --set cluster.workers=2",
    ):
        refuse_other_world_size(store, "pretrain", "abc", workers=4)
    refuse_other_world_size(store, "pretrain", "abc", workers=2)  # same count: it is simply resumed
    refuse_other_world_size(store, "pretrain", "other-config", workers=4)


def test_runs_without_a_complete_checkpoint_or_finished_do_not_block(tmp_path):
    from slm.orchestration.training import refuse_other_world_size

    store = Store.open(str(tmp_path))
    unfinished_run(store, "pretrain-bbbb", workers=2, checkpoint=False)
    assert refuse_other_world_size(store, "pretrain", "abc", workers=4) is None  # nothing to lose by starting over


def scores(acc, n=400):
    items = [1] * int(acc * n) + [0] * (n - int(acc * n))
    return {
        "mmlu": {
            "acc": acc,
            "se": (acc * (1 - acc) / n) ** 0.5,
            "n": n,
            "domains": {"stem": {"acc": acc, "se": 0.02, "n": n}},
            "subjects": {"astronomy": {"acc": acc, "se": 0.02, "n": n, "domain": "stem"}},
            "items": {"astronomy": items},
        },
        "bench": None,
    }


def test_an_experiment_is_accepted_only_when_it_beats_the_incumbent():
    from slm.config import SelectionPolicy
    from slm.orchestration.sweeping import judge_experiment

    policy = SelectionPolicy(margin=0.005)
    incumbent = {
        "name": "incumbent (x@v3-sft)",
        "key": "champions/x/v3-sft",
        "kind": "incumbent",
        "scores": scores(0.30),
    }
    worse = judge_experiment(
        {"name": "checkpoint-40", "key": "k", "kind": "checkpoint", "scores": scores(0.25)}, incumbent, policy
    )
    assert worse["status"] == "rejected" and "the incumbent incumbent (x@v3-sft) stays" in worse["reason"]
    assert worse["mmlu"] == {"candidate": 0.25, "incumbent": 0.30}
    better = judge_experiment(
        {"name": "checkpoint-40", "key": "k", "kind": "checkpoint", "scores": scores(0.40)}, incumbent, policy
    )
    assert better["status"] == "accepted" and "best MMLU" in better["reason"]
    tie = judge_experiment(
        {"name": "checkpoint-40", "key": "k", "kind": "checkpoint", "scores": scores(0.30)}, incumbent, policy
    )
    assert tie["status"] == "rejected" and "an experiment must beat it" in tie["reason"]


@pytest.fixture(scope="module")
def sft_plan(tmp_path_factory, tiny_model_dir):
    """The sft stage planned (not trained) on the embedded data, starting from a tiny local model."""
    from slm.orchestration.eval_sets import eval_index
    from slm.orchestration.stage import build_data, open_pipeline

    root = tmp_path_factory.mktemp("identity")
    pipeline, store, _ = open_pipeline("stages/pipeline.yaml", str(root / "store"))
    build_data(pipeline.stage("sft").builders, store, eval_index(pipeline))
    return pipeline, store, tiny_model_dir(seed=3), root


def run_id_of(sft_plan, **overrides):
    from slm.config import StageConfig, deep_merge, load_yaml_config
    from slm.orchestration.training import plan_run

    pipeline, store, start, _ = sft_plan
    cfg = load_yaml_config(
        "stages/configs/sft.yaml", StageConfig, deep_merge({"model": {"init": str(start)}}, overrides)
    )
    return plan_run(pipeline, cfg, store)[1]


def test_the_run_id_follows_the_deepspeed_config_contents_not_its_path(sft_plan):
    import json

    from slm.config import resolve_path

    ds_file = sft_plan[3] / "zero2.json"
    zero2 = json.loads(resolve_path("ds_configs/zero2.json").read_text())
    ds_file.write_text(json.dumps(zero2))
    before = run_id_of(sft_plan, deepspeed=str(ds_file))
    assert before == run_id_of(sft_plan, deepspeed=str(ds_file)), "planning twice names the same run"
    # the same file, edited in place (what a user does to ds_configs/zero2.json)
    zero2["zero_optimization"]["reduce_bucket_size"] = 12345678
    ds_file.write_text(json.dumps(zero2))
    assert run_id_of(sft_plan, deepspeed=str(ds_file)) != before, "an edited DeepSpeed config is a new run"


def test_the_run_id_follows_the_tokenizer_and_chat_template_files(sft_plan):
    import shutil

    pipeline, store, start, root = sft_plan
    base = run_id_of(sft_plan)
    template = root / "template.jinja"
    template.write_text("{% for m in messages %}{{ m['content'] }}{{ eos_token }}{% endfor %}")
    with_template = run_id_of(sft_plan, model={"chat_template": str(template)})
    template.write_text("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}{{ eos_token }}{% endfor %}")
    assert run_id_of(sft_plan, model={"chat_template": str(template)}) != with_template != base

    copy = root / "start-copy"
    shutil.copytree(start, copy)
    same_files = run_id_of(sft_plan, model={"init": str(copy)})
    config = copy / "tokenizer_config.json"
    config.write_text(config.read_text().replace("{", '{"model_max_length": 77, ', 1))
    assert run_id_of(sft_plan, model={"init": str(copy)}) != same_files, "an edited tokenizer is a new run"


def test_the_input_model_is_a_candidate_for_every_kind_of_init():
    from slm.orchestration.sweeping import precursor_of

    here = "/stores/a"
    champion = {"line": "l", "version": "v2-sft", "key": "champions/l/v2-sft"}
    cases = {
        "scratch": ({"spec": "scratch"}, None),
        "champion": (
            {"spec": "champion:l", "store": here, "key": "champions/l/v2-sft", "champion": champion},
            ("input model (l@v2-sft)", "champions/l/v2-sft", None),
        ),
        "store": ({"spec": "store:models/m", "store": here, "key": "models/m"}, ("input model", "models/m", None)),
        "s3": ({"spec": "s3://b/m", "store": "s3://b/m", "key": ""}, ("input model", None, "s3://b/m")),
        "local": ({"spec": "models/smollm2", "local": "/abs/models/smollm2"}, ("input model", None, "models/smollm2")),
        "hub": ({"spec": "hf:org/m", "hf": "org/m", "revision": None}, ("input model", None, "hf:org/m")),
    }
    from pydantic import TypeAdapter

    from slm.refs import ModelRef

    for kind, (init, expected) in cases.items():
        cand = precursor_of(TypeAdapter(ModelRef).validate_python(init), here)  # as a run record holds it
        if expected is None:
            assert cand is None, kind
            continue
        name, key, ref_spec = expected
        assert (cand.name, cand.key, cand.kind) == (name, key, "precursor"), kind
        assert (cand.ref.spec if cand.ref else None) == ref_spec, kind
        assert cand.spec == init["spec"]
