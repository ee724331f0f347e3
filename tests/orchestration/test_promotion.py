"""Promotion only moves `latest` forward: re-promoting weights that are already a champion changes nothing."""

from slm import layout
from slm.eval.scores import Candidate
from slm.eval.sweep import weights_digest
from slm.orchestration.lineage import ChampionInfo
from slm.orchestration.promotion import promote
from slm.store import Store


def info(run: str) -> ChampionInfo:
    """The provenance promotion writes for a candidate of run `run` (scores do not matter here)."""
    mmlu = {"acc": 0.25, "se": 0.04, "n": 120, "domains": {}, "subjects": {}}
    return ChampionInfo(
        stage="sft",
        run_id=run,
        candidate="checkpoint-10",
        candidate_kind="checkpoint",
        run_record=f"runs/sft/{run}/record.json",
        selection=f"runs/sft/{run}/sweep/selection.json",
        precursor=None,
        scores={"bench": None, "mmlu": mmlu},
        sweep_note="test",
    )


def test_re_promoting_an_older_champion_leaves_latest_on_the_newer_one(tmp_path, tiny_model_dir):
    store = Store.open(str(tmp_path / "store"))
    for name, seed in (("a", 21), ("b", 22)):
        store.put_tree(tiny_model_dir(seed), f"runs/sft/{name}/checkpoints/checkpoint-10")

    def candidate(run: str) -> Candidate:
        key = f"runs/sft/{run}/checkpoints/checkpoint-10"
        return Candidate(name="checkpoint-10", key=key, kind="checkpoint", weights_digest=weights_digest(store, key))

    def promote_run(run: str):
        return promote(store, "l", candidate(run), info(run), lambda final: f"card {final.version}\n")

    assert promote_run("a").version == "v1-sft"
    assert promote_run("b").version == "v2-sft"
    again = promote_run("a")
    assert again.version == "v1-sft"
    assert store.read_json(layout.latest_pointer("l"))["version"] == "v2-sft"  # not rewound
    assert [v for _, v in layout.versions(store, "l")] == ["v1-sft", "v2-sft"]  # nothing published twice
    assert promote_run("b").version == "v2-sft" and store.read_json(layout.latest_pointer("l"))["version"] == "v2-sft"


def test_rollback_is_explicit_recorded_and_not_undone_by_a_re_promotion(tmp_path, tiny_model_dir):
    import pytest

    from slm.errors import UserError
    from slm.orchestration.card import _rollbacks
    from slm.orchestration.promotion import rollback

    store = Store.open(str(tmp_path / "store"))
    for name, seed in (("a", 31), ("b", 32), ("c", 33)):
        store.put_tree(tiny_model_dir(seed), f"runs/sft/{name}/checkpoints/checkpoint-10")

    def promote_run(run: str):
        key = f"runs/sft/{run}/checkpoints/checkpoint-10"
        cand = Candidate(name="checkpoint-10", key=key, kind="checkpoint", weights_digest=weights_digest(store, key))
        return promote(store, "l", cand, info(run), lambda final: "card\n")

    promote_run("a"), promote_run("b")
    with pytest.raises(UserError, match="not a version name"):
        rollback(store, "l", "../../runs/sft/a", "x")
    with pytest.raises(UserError, match="champion l@v9-sft not found"):
        rollback(store, "l", "v9-sft", "x")
    with pytest.raises(UserError, match="already the line's latest"):
        rollback(store, "l", "v2-sft", "x")
    pointer = rollback(store, "l", "v1-sft", "v2 answers in French")
    latest = store.read_json(layout.latest_pointer("l"))
    assert latest["version"] == "v1-sft" and latest["rollback"]["from"] == "v2-sft" == pointer.rollback.from_
    assert "| v2-sft | v1-sft |" in _rollbacks(store, "l") and "v2 answers in French" in _rollbacks(store, "l")
    promote_run("b")  # a pipeline re-run re-promoting v2's weights does not undo the rollback
    assert store.read_json(layout.latest_pointer("l"))["version"] == "v1-sft"
    assert promote_run("c").version == "v3-sft"  # a new champion moves latest forward again
    assert store.read_json(layout.latest_pointer("l"))["version"] == "v3-sft"
