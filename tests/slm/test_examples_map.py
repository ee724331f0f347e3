"""Examples are tokenized once per node into an Arrow cache; in parallel processes for big splits,
with the same examples as one process makes."""

import json

import yaml

from slm.data_builders import run_builder
from slm.store import Store


def test_parallel_tokenization_makes_the_same_examples(tmp_path, tiny_tokenizer, monkeypatch, capsys):
    from types import SimpleNamespace

    from transformers import AutoTokenizer

    from slm.examples import supervised_chat

    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        "".join(
            json.dumps({"prompt": f"Question {i}: how many {i % 7} apples?", "response": f"{i} apples."}) + "\n"
            for i in range(3000)
        )
    )
    config = tmp_path / "b.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "builder": "sft",
                "inputs": [{"path": str(rows)}],
                "output": "datasets/sft",
                "num_shards": 3,
                "hygiene": {"near_dedup": False},
            }
        )
    )
    store = Store.open(str(tmp_path / "store"))
    run_builder(str(config), store)
    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer)
    made = {}
    for processes in ("1", "2"):
        monkeypatch.setenv("SLM_MAP_PROCESSES", processes)
        monkeypatch.setenv("SLM_CACHE", str(tmp_path / f"cache-{processes}"))
        job = SimpleNamespace(
            store=store.uri, dataset="datasets/sft", stage="sft", max_length=64, run_id="t", packing=False
        )
        made[processes] = supervised_chat(job, tokenizer, "train")
        # packed, the rows must not depend on the node's processes either (ranks on nodes of different
        # sizes read the same dataset): the tokenizing runs in parallel, the packing in one process
        packed = SimpleNamespace(**{**vars(job), "packing": True, "run_id": "p", "max_length": 512})
        made[f"packed-{processes}"] = supervised_chat(packed, tokenizer, "train")
    assert len(made["1"]) == len(made["2"]) == 3000
    assert made["1"][:]["input_ids"] == made["2"][:]["input_ids"] and made["1"][:]["labels"] == made["2"][:]["labels"]
    one, two = made["packed-1"][:], made["packed-2"][:]
    assert one["input_ids"] == two["input_ids"] and one["seq_lengths"] == two["seq_lengths"]
    assert sum(map(len, one["seq_lengths"])) == 3000 and len(one["input_ids"]) < 3000
    said = capsys.readouterr().err
    assert "[sft] preparing 3,000 train rows (chat64) on this node, 2 process(es)" in said
    assert said.count("train rows prepared in") == 6  # padded and packed, 1 and 2 processes: 2 + 2 × 2
    assert "[sft] preparing 3,000 train rows (pack512) on this node, 1 process(es)" in said
    again = supervised_chat(job, tokenizer, "train")  # the node's cache, read back by another rank
    assert again[:]["input_ids"] == made["2"][:]["input_ids"]
    assert "preparing" not in capsys.readouterr().err  # a rank reading the node's cache has nothing to wait for
