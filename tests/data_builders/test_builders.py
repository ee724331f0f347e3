"""Every builder turns its fixtures into sharded Parquet datasets with a checkable manifest."""

import json

import pyarrow.parquet as pq
import pytest

from slm import REPO_ROOT
from slm.data_builders import run_builder
from slm.data_builders.fixtures.generate import generate
from slm.data_builders.surgical import answer_fits, asked_form
from slm.datasets import load_split, read_manifest
from slm.errors import UserError
from slm.store import Store, sha256_file

CONFIGS = REPO_ROOT / "data_builders" / "configs"


@pytest.fixture
def store(tmp_path):
    return Store.open(str(tmp_path / "store"))


def check_shards(store, key):
    manifest = read_manifest(store, key).to_json()  # the JSON form: what the store holds
    root = store.root / key
    for split in manifest["splits"].values():
        assert len(split["shards"]) >= 1
        assert sum(s["rows"] for s in split["shards"]) == split["rows"]
        for shard in split["shards"]:
            assert sha256_file(root / shard["file"]) == shard["sha256"]
            assert pq.read_metadata(root / shard["file"]).num_rows == shard["rows"]
    return manifest


def test_fixtures_are_the_generators_output(tmp_path):
    for path in generate(tmp_path):
        committed = REPO_ROOT / "data_builders" / "fixtures" / path.relative_to(tmp_path)
        assert committed.read_bytes() == path.read_bytes(), f"{committed} differs from generate.py output"


def test_pretrain_builder_packs_weighted_blocks(store):
    run_builder(str(CONFIGS / "tokenizer.yaml"), store)
    run_builder(str(CONFIGS / "pretrain.yaml"), store)
    manifest = check_shards(store, "datasets/pretrain")
    assert manifest["block_size"] == 128 and manifest["tokenizer_sha256"]
    blocks = {s["name"]: s["blocks"] for s in manifest["sources"]}
    assert set(blocks) == {"encyclopedic", "educational", "web"} and all(b > 0 for b in blocks.values())
    total = sum(blocks.values())
    # weights 0.3/0.4/0.3 are token proportions: each within 12 points of its target
    for source in manifest["sources"]:
        assert abs(source["blocks"] / total - source["weight"]) < 0.12
    rows = load_split(store, "datasets/pretrain")
    assert all(len(ids) == 128 for ids in rows["input_ids"])


@pytest.mark.parametrize("name", ["sft", "surgical", "repair"])
def test_chat_builders(store, name):
    manifest = run_builder(str(CONFIGS / f"{name}.yaml"), store)
    check_shards(store, f"datasets/{name}")
    assert manifest["builder"] == name and manifest["sources"]
    row = load_split(store, f"datasets/{name}")[0]
    assert row["messages"][-1]["role"] == "assistant"
    if name == "repair":
        assert manifest["splits"]["validation"]["rows"] > 0
        assert {s["name"] for s in manifest["sources"]} == {"block_a_mcq", "block_b_factual", "block_d_numeric"}
        factual = next(s for s in manifest["sources"] if s["name"] == "block_b_factual")
        assert factual["rows_out"] == 2 * factual["rows_in"]  # weight 2.0
    if name == "surgical":
        assert set(manifest["forms"]) == {"yes_no", "letter", "list", "number"}


def test_unchanged_inputs_skip_the_rebuild(store, capsys):
    first = run_builder(str(CONFIGS / "sft.yaml"), store)
    second = run_builder(str(CONFIGS / "sft.yaml"), store)
    assert first["created"] == second["created"]
    assert "up to date" in capsys.readouterr().err


def test_empty_and_malformed_inputs_fail_with_file_and_line(store, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"builder: sft\ninputs: [{{path: {empty}}}]\noutput: datasets/x\n")
    with pytest.raises(UserError, match="empty.jsonl: no rows"):
        run_builder(str(cfg), store)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "a", "response": "b"}) + "\n{oops\n")
    cfg.write_text(f"builder: sft\ninputs: [{{path: {bad}}}]\noutput: datasets/x\n")
    with pytest.raises(UserError, match="bad.jsonl:2: not valid JSON"):
        run_builder(str(cfg), store)
    cfg.write_text(f"builder: sft\ninputs: [{{path: {tmp_path / 'missing.jsonl'}}}]\noutput: datasets/x\n")
    with pytest.raises(UserError, match="input file not found"):
        run_builder(str(cfg), store)


def test_missing_dataset_is_a_clear_error(store):
    with pytest.raises(UserError, match="datasets/nothing not found"):
        read_manifest(store, "datasets/nothing")


def test_surgical_form_rules():
    assert asked_form("Answer yes or no only. Is X Y?") == ("yes_no", None)
    assert asked_form("List exactly 3 things") == ("list", 3)
    assert answer_fits("list", 3, "a\nb\nc") and not answer_fits("list", 3, "a\nb")
    assert answer_fits("letter", None, "B") and not answer_fits("letter", None, "B. Paris")
    assert answer_fits("number", None, "42") and not answer_fits("number", None, "42 apples")


def test_distill_builder_runs_the_teacher(store, tiny_model_dir, tmp_path):
    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps({"question": q}) + "\n" for q in ["What is 2+2?", "Capital of Peru?"]))
    cfg = tmp_path / "distill.yaml"
    cfg.write_text(
        f"builder: distill\ninputs: [{{path: {questions}, name: q}}]\noutput: datasets/d\n"
        f"teacher: {tiny_model_dir(3)}\nmax_new_tokens: 8\n"
    )
    manifest = run_builder(str(cfg), store)
    assert manifest["teacher"]["decoding"] == "greedy" and manifest["sources"][0]["questions"] == 2
    rows = load_split(store, "datasets/d")
    assert all(r["messages"][0]["role"] == "user" for r in rows)


def test_a_chat_builder_mixes_in_a_dataset_already_in_the_store(store, tmp_path):
    import yaml

    run_builder(str(CONFIGS / "sft.yaml"), store)
    sft_rows = read_manifest(store, "datasets/sft").to_json()["splits"]["train"]["rows"]
    config = tmp_path / "mix.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "builder": "surgical",
                "output": "datasets/mix",
                "inputs": [
                    {"path": "data_builders/fixtures/surgical/format_discipline.jsonl", "name": "format"},
                    {"dataset": "datasets/sft", "name": "replay", "weight": 0.5},
                ],
            }
        )
    )
    run_builder(str(config), store)
    manifest = check_shards(store, "datasets/mix")
    replay = next(s for s in manifest["sources"] if s["name"] == "replay")
    assert replay["dataset"] == "datasets/sft" and replay["rows_in"] == sft_rows
    assert replay["rows_out"] == round(0.5 * sft_rows) and replay["build_digest"]
    rows = load_split(store, "datasets/mix", "train")
    assert {"format", "replay"} == set(rows["source"])
    digest = manifest["build_digest"]
    # the mixed-in dataset is part of the build's identity: rebuilt with other rows, the mix is rebuilt too
    run_builder(str(CONFIGS / "sft.yaml"), store, overrides={"seed": 5})
    assert read_manifest(store, "datasets/mix").build_digest == digest
    assert run_builder(str(config), store)["build_digest"] != digest


def test_dataset_inputs_are_checked_before_building(store, tmp_path):
    import yaml

    def config(builder, item):
        path = tmp_path / f"{builder}.yaml"
        path.write_text(yaml.safe_dump({"builder": builder, "output": "datasets/x", "inputs": [item]}))
        return str(path)

    with pytest.raises(UserError, match="input dataset datasets/nowhere not found"):
        run_builder(config("sft", {"dataset": "datasets/nowhere"}), store)
    with pytest.raises(UserError, match="is read by the chat builders .* not by dpo"):
        run_builder(config("dpo", {"dataset": "datasets/sft"}), store)
    with pytest.raises(UserError, match="exactly one of `path`"):
        run_builder(config("sft", {"dataset": "datasets/sft", "path": "a.jsonl"}), store)


@pytest.mark.parametrize(
    "row, message",
    [
        ({"prompt": None, "response": "x"}, "`prompt` must be a non-empty string \\(got NoneType\\)"),
        ({"question": "q", "answer": 42}, "`answer` must be a non-empty string \\(got int\\)"),
        ({"prompt": "p", "response": "  "}, "`response` must be a non-empty string"),
    ],
)
def test_null_or_non_text_values_are_named_not_trained_on_as_text(row, message):
    from slm.data_builders.sources import infer_format, to_messages

    with pytest.raises(UserError, match=f"in.jsonl:3: {message}"):
        to_messages(row, infer_format(set(row)), "in.jsonl:3")


def test_a_shard_swapped_with_a_matching_completion_record_is_caught_and_rebuilt(store, capsys):
    """The store's completion record can be made to match a swapped file; the manifest's own per-shard
    checksums and row counts cannot: training, the builder and load_split all check them."""
    run_builder(str(CONFIGS / "sft.yaml"), store)
    run_builder(str(CONFIGS / "surgical.yaml"), store)
    sft_shard, other = (
        store.root / "datasets/sft/train/shard-00000.parquet",
        store.root / "datasets/surgical/train/shard-00000.parquet",
    )
    sft_shard.write_bytes(other.read_bytes())
    complete = json.loads((store.root / "datasets/sft/_COMPLETE.json").read_text())
    complete["files"]["train/shard-00000.parquet"] = {
        "sha256": sha256_file(sft_shard),
        "size": sft_shard.stat().st_size,
    }
    (store.root / "datasets/sft/_COMPLETE.json").write_text(json.dumps(complete))
    with pytest.raises(
        UserError,
        match=r"dataset .*datasets/sft is corrupted: shard train/shard-00000.parquet has "
        r"sha256 .* the manifest says",
    ):
        read_manifest(store, "datasets/sft")
    run_builder(str(CONFIGS / "sft.yaml"), store)
    assert "does not match its manifest" in capsys.readouterr().err
    assert (
        len(load_split(store, "datasets/sft"))
        == read_manifest(store, "datasets/sft").to_json()["splits"]["train"]["rows"]
    )


@pytest.mark.parametrize("name", ["sft", "surgical", "repair", "dpo", "pretrain"])
@pytest.mark.parametrize("weight", [None, 0.5, 2.0, 3.0])
def test_no_validation_row_is_also_in_train(store, tmp_path, name, weight):
    """Held out means held out: no validation row (by content) is in train, for every builder and weight
    (weights repeat rows; the repair default weighs a source 2.0)."""
    import yaml

    config = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    if weight is not None:
        for item in config["inputs"]:
            item["weight"] = weight
    config["validation_fraction"] = 0.2
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    if name == "pretrain":
        run_builder(str(CONFIGS / "tokenizer.yaml"), store)
    run_builder(str(path), store)
    column = "input_ids" if name == "pretrain" else "chosen" if name == "dpo" else "messages"
    key = config["output"]

    def contents(split: str) -> list[str]:
        rows = load_split(store, key, split)
        other = {"dpo": "prompt"}.get(name)
        return [json.dumps([row[column], row.get(other)] if other else row[column], sort_keys=True) for row in rows]

    train, validation = contents("train"), contents("validation")
    assert validation and train
    assert not set(validation) & set(train), f"{len(set(validation) & set(train))} validation rows also in train"
