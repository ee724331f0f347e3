"""Promotion only moves `latest` forward: re-promoting weights that are already a champion changes nothing."""
from eval.scores import Candidate
from eval.sweep import weights_digest
from orchestration.promotion import promote
from slm import layout
from slm.store import Store


def test_re_promoting_an_older_champion_leaves_latest_on_the_newer_one(tmp_path, tiny_model_dir):
    store = Store.open(str(tmp_path / "store"))
    for name, seed in (("a", 21), ("b", 22)):
        store.put_tree(tiny_model_dir(seed), f"runs/sft/{name}/checkpoints/checkpoint-10")

    def candidate(run: str) -> Candidate:
        key = f"runs/sft/{run}/checkpoints/checkpoint-10"
        return Candidate(name="checkpoint-10", key=key, kind="checkpoint", weights_digest=weights_digest(store, key))

    def promote_run(run: str):
        return promote(store, "l", candidate(run), {"stage": "sft", "run_id": run}, lambda info: f"card {info['version']}\n")

    assert promote_run("a").version == "v1-sft"
    assert promote_run("b").version == "v2-sft"
    again = promote_run("a")
    assert again.version == "v1-sft"
    assert store.read_json(layout.latest_pointer("l"))["version"] == "v2-sft"  # not rewound
    assert [v for _, v in layout.versions(store, "l")] == ["v1-sft", "v2-sft"]  # nothing published twice
    assert promote_run("b").version == "v2-sft" and store.read_json(layout.latest_pointer("l"))["version"] == "v2-sft"
