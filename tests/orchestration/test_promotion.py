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


def race(store, tiny_model_dir, seeds=(41, 42)):
    """Two promotions of different weights at once: both choose the next version before either claims it
    (a barrier in next_version makes the race certain, not a matter of timing). Returns their pointers."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    for i, seed in enumerate(seeds):
        store.put_tree(tiny_model_dir(seed), f"runs/sft/r{i}/checkpoints/checkpoint-10")
    barrier, first = threading.Barrier(len(seeds), timeout=30), threading.local()
    real_next = layout.next_version

    def next_version(*args):
        version = real_next(*args)
        if not getattr(first, "seen", False):
            first.seen = True
            barrier.wait()  # every promotion has chosen the same version by now
        return version

    def one(i: int):
        key = f"runs/sft/r{i}/checkpoints/checkpoint-10"
        cand = Candidate(name="checkpoint-10", key=key, kind="checkpoint", weights_digest=weights_digest(store, key))
        return promote(store, "l", cand, info(f"r{i}"), lambda final: f"card {final.version}\n")

    layout.next_version = next_version
    try:
        with ThreadPoolExecutor(len(seeds)) as pool:
            return list(pool.map(one, range(len(seeds))))
    finally:
        layout.next_version = real_next


def check_nothing_lost(store, pointers, n: int):
    from slm.orchestration.lineage import read_champion

    versions = sorted(p.version for p in pointers)
    assert versions == [f"v{i}-sft" for i in range(1, n + 1)], versions  # one version each, none shared
    digests = set()
    for pointer in pointers:
        champion = read_champion(store, pointer.key)
        assert champion.version == pointer.version and store.is_complete(pointer.key)
        assert weights_digest(store, pointer.key) == champion.weights_digest  # its own weights, complete
        digests.add(champion.weights_digest)
    assert len(digests) == n  # nobody's weights overwrote another's
    assert store.read_json(layout.latest_pointer("l"))["version"] == versions[-1]  # latest on the newest


def test_two_promotions_at_once_get_two_versions_on_a_local_store(tmp_path, tiny_model_dir):
    store = Store.open(str(tmp_path / "store"))
    check_nothing_lost(store, race(store, tiny_model_dir, seeds=(41, 42, 43)), 3)


def test_two_promotions_at_once_get_two_versions_on_s3(s3_env, tiny_model_dir):
    store = Store.open(s3_env)
    check_nothing_lost(store, race(store, tiny_model_dir), 2)


def test_a_rollback_racing_a_promotion_is_refused_not_lost(tmp_path, tiny_model_dir):
    """latest.json moves by compare-and-swap: a rollback whose view of `latest` went stale changes nothing."""
    import pytest

    from slm.errors import UserError
    from slm.orchestration import promotion

    store = Store.open(str(tmp_path / "store"))
    pointers = race(store, tiny_model_dir)
    real_write_if = store.write_if

    def promoted_meanwhile(key, data, tag):
        store.write_json(key, {**store.read_json(key), "updated_at": "meanwhile"})  # another writer moved it
        return real_write_if(key, data, tag)

    store.write_if = promoted_meanwhile
    before = store.read_json(layout.latest_pointer("l"))
    with pytest.raises(UserError, match="moved while rolling back"):
        promotion.rollback(store, "l", "v1-sft", "r")
    latest = store.read_json(layout.latest_pointer("l"))
    assert latest == {**before, "updated_at": "meanwhile"} and "rollback" not in latest
    assert not store.children(layout.line_history("l"))  # no rollback event left behind
    assert sorted(p.version for p in pointers) == ["v1-sft", "v2-sft"]


def test_store_claims_and_compare_and_swap_on_s3(s3_env):
    """The S3 primitives the claims rest on, against a real server: If-None-Match and If-Match puts."""
    store = Store.open(s3_env)
    assert store.create_exclusive("a/claim", b"first") and not store.create_exclusive("a/claim", b"second")
    assert store.read_bytes("a/claim") == b"first"
    data, tag = store.read_tagged("a/claim")
    assert data == b"first" and store.read_tagged("a/none") == (None, None)
    assert store.write_if("a/claim", b"third", tag) and not store.write_if("a/claim", b"fourth", tag)
    assert not store.write_if("a/claim", b"fifth", None) and store.write_if("a/new", b"x", None)
    assert store.read_bytes("a/claim") == b"third"


def test_a_model_that_names_custom_code_is_promoted_with_a_word_in_the_log_and_the_card(
    tmp_path, tiny_model_dir, capsys
):
    import json

    from slm.orchestration.card import section

    model = tiny_model_dir(23)
    config = json.loads((model / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (model / "config.json").write_text(json.dumps(config))
    store = Store.open(str(tmp_path / "store"))
    key = "runs/sft/a/checkpoints/checkpoint-10"
    store.put_tree(model, key)
    candidate = Candidate(name="checkpoint-10", key=key, kind="checkpoint", weights_digest=weights_digest(store, key))
    cards = []
    pointer = promote(store, "l", candidate, info("a"), lambda final: cards.append(final) or "card\n")
    said = capsys.readouterr()
    assert "names custom code (auto_map: AutoModelForCausalLM)" in said.out + said.err
    promoted = ChampionInfo.model_validate_json(store.read_text(f"{pointer.key}/champion.json"))
    assert promoted.custom_code == {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    note = section("custom_code", info=cards[0])
    assert "`AutoModelForCausalLM` → `modeling_evil.EvilForCausalLM`" in note and "trust_remote_code` off" in note
    assert section("custom_code", info=info("b")).strip() == ""  # a plain model: no note
