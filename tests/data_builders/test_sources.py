"""Builder sources: local JSONL, Parquet, text, globs, `save_to_disk` directories, S3 objects (on the
local SeaweedFS), store datasets and the hub; the common row layouts, inferred or named."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from slm.data_builders import run_builder
from slm.datasets import load_split
from slm.errors import UserError
from slm.store import Store

ROWS = [
    ("What colour is a ripe tomato?", "Red."),
    ("How many wheels does a bicycle have?", "Two."),
    ("What do cows drink?", "Water."),
    ("Which season comes after winter?", "Spring."),
]
LAYOUTS = {
    "messages": lambda q, a: {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]},
    "sharegpt": lambda q, a: {"conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]},
    "alpaca": lambda q, a: {"instruction": q, "input": "", "output": a},
    "prompt_response": lambda q, a: {"prompt": q, "response": a},
    "question_answer": lambda q, a: {"question": q, "answer": a},
}


@pytest.fixture
def store(tmp_path):
    return Store.open(str(tmp_path / "store"))


def build(tmp_path, store, inputs, builder="sft", **extra):
    config = tmp_path / f"{builder}-build.yaml"
    config.write_text(
        yaml.safe_dump(
            {"builder": builder, "inputs": inputs, "output": f"datasets/{builder}", "num_shards": 1, **extra}
        )
    )
    return run_builder(str(config), store)


def conversations(store, key="datasets/sft"):
    return sorted((m[0]["content"], m[-1]["content"]) for m in load_split(store, key)["messages"])


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_common_layout_becomes_the_same_conversations(tmp_path, store, layout):
    path = write_jsonl(tmp_path / "in.jsonl", [LAYOUTS[layout](q, a) for q, a in ROWS])
    manifest = build(tmp_path, store, [{"path": str(path)}])
    assert conversations(store) == sorted(ROWS)
    assert manifest["sources"][0]["format"] == layout  # inferred from the columns


def test_alpaca_input_joins_the_instruction_and_a_named_format_wins(tmp_path, store):
    path = write_jsonl(
        tmp_path / "in.jsonl",
        [{"instruction": "Translate to French.", "input": "cat", "output": "chat", "text": "ignored"}],
    )
    build(tmp_path, store, [{"path": str(path), "format": "alpaca"}])
    assert conversations(store) == [("Translate to French.\n\ncat", "chat")]


def test_an_unknown_layout_is_one_line_naming_the_source_and_its_columns(tmp_path, store):
    path = write_jsonl(tmp_path / "odd.jsonl", [{"q": "x", "a": "y"}])
    with pytest.raises(
        UserError, match=r"input odd \(.*odd.jsonl:1\): cannot tell the layout from its columns \(a, q\); set `format:`"
    ):
        build(tmp_path, store, [{"path": str(path)}])


def test_parquet_globs_and_save_to_disk_directories(tmp_path, store):
    from datasets import Dataset

    parts = tmp_path / "parts"
    parts.mkdir()
    for i, (q, a) in enumerate(ROWS[:2]):
        pq.write_table(pa.Table.from_pylist([{"prompt": q, "response": a}]), parts / f"part-{i}.parquet")
    Dataset.from_list([{"question": q, "answer": a} for q, a in ROWS[2:]]).save_to_disk(str(tmp_path / "saved"))
    manifest = build(
        tmp_path,
        store,
        [{"path": str(parts / "*.parquet"), "name": "parquet"}, {"path": str(tmp_path / "saved"), "name": "saved"}],
    )
    assert conversations(store) == sorted(ROWS)
    assert [s["rows_in"] for s in manifest["sources"]] == [2, 2]


def test_s3_objects_by_glob(tmp_path, store, s3_env):
    bucket_store = Store.open(s3_env)
    for i, (q, a) in enumerate(ROWS):
        bucket_store.write_text(f"inputs/part-{i}.jsonl", json.dumps({"prompt": q, "response": a}) + "\n")
    bucket_store.write_text("inputs/notes.txt", "not matched by the glob\n")
    build(tmp_path, store, [{"path": f"{s3_env}/inputs/part-*.jsonl", "name": "s3"}])
    assert conversations(store) == sorted(ROWS)
    with pytest.raises(UserError, match="matches no object"):
        build(tmp_path, store, [{"path": f"{s3_env}/inputs/none-*.jsonl"}])


def test_weights_repeat_and_sample_by_index_and_limit_caps_a_source(tmp_path, store):
    many = write_jsonl(
        tmp_path / "many.jsonl",
        [{"prompt": f"Question number {i} about topic {i * 7}?", "response": f"Answer {i}."} for i in range(40)],
    )
    few = write_jsonl(tmp_path / "few.jsonl", [{"prompt": q, "response": a} for q, a in ROWS])
    manifest = build(
        tmp_path, store, [{"path": str(many), "weight": 0.5, "limit": 30}, {"path": str(few), "weight": 2.0}]
    )
    out = {s["name"]: s["rows_out"] for s in manifest["sources"]}
    assert out == {"many": 15, "few": 8}
    assert manifest["splits"]["train"]["rows"] == 23


def test_pretrain_reads_text_columns_from_parquet(tmp_path, store, tiny_tokenizer):
    import random

    rng = random.Random(0)
    words = "fox deer heron badger otter lynx valley river stone morning winter crossed rested watched".split()
    docs = [" ".join(rng.choice(words) for _ in range(14)) + f" {i}." for i in range(30)]  # no two alike
    pq.write_table(pa.Table.from_pylist([{"text": d, "url": "x"} for d in docs]), tmp_path / "docs.parquet")
    manifest = build(
        tmp_path,
        store,
        [{"path": str(tmp_path / "docs.parquet")}],
        builder="pretrain",
        tokenizer=str(tiny_tokenizer),
        block_size=32,
    )
    assert manifest["sources"][0]["documents"] == 30 and manifest["tokens"] % 32 == 0
    assert all(len(ids) == 32 for ids in load_split(store, "datasets/pretrain")["input_ids"])


def test_the_hub_path_is_real_and_offline_says_so_in_one_line(tmp_path, store, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        UserError,
        match=r"inputs: hf:nobody/no-such-dataset \(config None, split train\) could not be "
        r"loaded",
    ):
        build(tmp_path, store, [{"hf": "nobody/no-such-dataset"}])


def test_a_store_dataset_feeds_a_chat_builder(tmp_path, store):
    path = write_jsonl(tmp_path / "in.jsonl", [{"prompt": q, "response": a} for q, a in ROWS])
    build(tmp_path, store, [{"path": str(path)}])
    config = tmp_path / "surgical-build.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "builder": "repair",
                "inputs": [{"dataset": "datasets/sft", "name": "replay"}],
                "output": "datasets/repair",
                "num_shards": 1,
            }
        )
    )
    manifest = run_builder(str(config), store)
    assert manifest["sources"][0]["dataset"] == "datasets/sft" and conversations(store, "datasets/repair") == sorted(
        ROWS
    )


def test_a_source_larger_than_a_spool_batch_streams_through(tmp_path, store):
    """Thousands of rows: several spool batches, several shards (max_shard_rows), every row once."""
    rows = [
        {"prompt": f"Row {i}: tell me about item {i * 7919 % 10007} of the catalogue.", "response": f"It is {i}."}
        for i in range(5000)
    ]
    manifest = build(
        tmp_path,
        store,
        [{"path": str(write_jsonl(tmp_path / "big.jsonl", rows))}],
        max_shard_rows=1500,
        hygiene={"near_dedup": False},
    )
    assert len(manifest["splits"]["train"]["shards"]) == 4 and manifest["splits"]["train"]["rows"] == 5000
    assert len(set(conversations(store))) == 5000


def test_a_builder_knows_how_many_rows_are_coming_and_says_when_it_will_be_done(tmp_path, store, capsys, monkeypatch):
    """Row counts from the files (JSONL lines, Parquet metadata, limits) give the progress lines an ETA."""
    from slm.config import BuilderInput
    from slm.data_builders import common
    from slm.data_builders.sources import Source

    jsonl = write_jsonl(tmp_path / "a.jsonl", [LAYOUTS["prompt_response"](q, a) for q, a in ROWS] * 50)
    pq.write_table(pa.table({"prompt": [q for q, _ in ROWS], "response": [a for _, a in ROWS]}), tmp_path / "b.parquet")
    count = lambda **item: Source(BuilderInput(**item), store, "x.yaml").expected_rows()  # noqa: E731
    assert count(path=str(jsonl)) == 201  # 200 lines, and room for a last one without a newline
    assert count(path=str(tmp_path / "b.parquet")) == 4 and count(path=str(jsonl), limit=10) == 10
    assert count(hf="org/streamed") is None  # a streamed hub dataset: unknown until read

    monkeypatch.setattr(common.time, "time", iter(range(0, 10_000, 20)).__next__)  # 20 s between ticks
    progress = common.Progress("datasets/sft", total=1000)
    progress.tick(100)
    progress.tick(150)
    lines = capsys.readouterr().err.splitlines()
    # 250 rows in 60 s: 4 rows/s, 750 to go: 3 minutes
    assert lines[-1] == "[data] datasets/sft: 250 rows (4 rows/s), about 25% of 1,000, eta 0:03:00"


def test_a_symlink_loop_under_a_glob_reads_each_file_once(tmp_path, store):
    data = tmp_path / "data"
    data.mkdir()
    write_jsonl(data / "rows.jsonl", [LAYOUTS["messages"](q, a) for q, a in ROWS])
    (data / "loop").symlink_to(data, target_is_directory=True)  # data/loop/loop/... down to ELOOP
    manifest = build(tmp_path, store, [{"path": str(data / "**" / "*.jsonl")}])
    assert manifest["sources"][0]["rows_in"] == len(ROWS)
    assert conversations(store) == sorted(ROWS)


def test_a_byte_order_mark_is_read_past_in_jsonl_as_in_yaml(tmp_path, store):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps(LAYOUTS["messages"](q, a)) + "\n" for q, a in ROWS).encode())
    config = tmp_path / "bom-build.yaml"
    config.write_bytes(
        b"\xef\xbb\xbf"
        + yaml.safe_dump({"builder": "sft", "inputs": [{"path": str(path)}], "output": "datasets/sft"}).encode()
    )
    run_builder(str(config), store)
    assert conversations(store) == sorted(ROWS)


def test_mcq_rows_become_a_lettered_question_answered_by_the_letter(tmp_path, store):
    rows = [
        {"question": "Which of these is a mammal?", "choices": ["Shark", "Whale", "Trout", "Eel"], "answer": 1},
        {"question": "Which gas do plants take in?", "choices": ["Oxygen", "Carbon dioxide"], "answer": "b"},
    ]
    manifest = build(tmp_path, store, [{"path": str(write_jsonl(tmp_path / "mcq.jsonl", rows))}], builder="repair")
    assert manifest["sources"][0]["format"] == "mcq"  # question + choices + answer
    got = dict(conversations(store, "datasets/repair"))
    assert got["Which of these is a mammal?\nA. Shark\nB. Whale\nC. Trout\nD. Eel\nAnswer with the letter only."] == "B"
    assert got["Which gas do plants take in?\nA. Oxygen\nB. Carbon dioxide\nAnswer with the letter only."] == "B"
    bad = write_jsonl(tmp_path / "bad.jsonl", [{**rows[0], "answer": 4}])
    with pytest.raises(UserError, match=r"bad.jsonl:1: `answer` must be the index or the letter of one of the 4"):
        build(tmp_path, store, [{"path": str(bad)}], builder="repair")


def test_columns_rename_a_sources_own_names_and_long_answers_are_dropped_and_counted(tmp_path, store):
    rows = [{"query": q, "reply": a} for q, a in ROWS] + [{"query": "Tell me about rivers.", "reply": "x" * 150}]
    path = write_jsonl(tmp_path / "own.jsonl", rows)
    item = {"path": str(path), "columns": {"query": "question", "reply": "answer"}, "max_answer_chars": 99}
    manifest = build(tmp_path, store, [item], builder="repair")
    assert conversations(store, "datasets/repair") == sorted(ROWS)  # the 150-character answer is gone
    source = manifest["sources"][0]
    assert source["format"] == "question_answer" and source["answers_over_limit"] == 1 and source["rows_in"] == 4


def test_field_unnests_rows_held_under_one_struct_column_as_mmlu_auxiliary_train_holds_them(tmp_path, store):
    """cais/mmlu's auxiliary_train config holds each row under `train`; `field: train` reads it, as
    repair block A and the distill mix of stages/examples/ff313 do."""
    inner = {"question": "Which of these is a mammal?", "choices": ["Shark", "Whale", "Trout", "Eel"], "answer": 1}
    path = tmp_path / "aux.parquet"
    pq.write_table(pa.Table.from_pylist([{"train": {**inner, "subject": ""}}]), path)
    build(tmp_path, store, [{"path": str(path), "field": "train", "format": "mcq"}], builder="repair")
    ((question, answer),) = conversations(store, "datasets/repair")
    assert question.startswith("Which of these is a mammal?\nA. Shark\nB. Whale") and answer == "B"
    with pytest.raises(
        UserError, match=r"aux.parquet.*`field: test` names no struct column of this row \(its columns: train\)"
    ):
        build(tmp_path, store, [{"path": str(path), "field": "test", "format": "mcq"}], builder="repair")
