"""The distill builder's teacher: answers in shards kept in the store (an interrupted build resumes
without answering them again), in this process or in Ray actors."""

import json

import pytest
import yaml

from slm.data_builders import run_builder
from slm.datasets import load_split
from slm.store import Store

QUESTIONS = [f"Question {i}: what comes after {i}?" for i in range(300)]  # two shards of 256


@pytest.fixture
def setup(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("SLM_CACHE", str(tmp_path / "cache"))
    source = tmp_path / "questions.jsonl"
    source.write_text("".join(json.dumps({"question": q}) + "\n" for q in QUESTIONS))
    store = Store.open(str(tmp_path / "store"))
    teacher = tiny_model_dir(9)

    def config(**extra):
        path = tmp_path / "distill.yaml"
        path.write_text(
            yaml.safe_dump(
                {
                    "builder": "distill",
                    "inputs": [{"path": str(source)}],
                    "output": "datasets/distill",
                    "teacher": str(teacher),
                    "max_new_tokens": 3,
                    "num_shards": 1,
                    "hygiene": {"near_dedup": False},
                    **extra,
                }
            )
        )
        return str(path)

    return store, config


def test_answered_shards_are_kept_and_an_interrupted_build_resumes(setup, monkeypatch, capsys):
    import slm.data_builders.distill as distill

    store, config = setup
    calls = []
    real_answer = distill.Teacher.answer

    def interrupted(self, questions, max_new_tokens):
        calls.append(len(questions))
        if len(calls) == 2:
            raise KeyboardInterrupt  # the box is lost while the second shard is being answered
        return real_answer(self, questions, max_new_tokens)

    monkeypatch.setattr(distill.Teacher, "answer", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_builder(config(), store)
    work = [k for k in store.list("datasets/distill.teacher")]
    assert len(work) == 1 and work[0].endswith("shard-00000.json")  # the first shard's answers were kept

    calls.clear()
    monkeypatch.setattr(distill.Teacher, "answer", lambda self, q, n: calls.append(len(q)) or real_answer(self, q, n))
    manifest = run_builder(config(), store)
    assert calls == [300 - 256]  # only the second shard was answered again
    assert "1 of 2 shards already answered; resuming" in capsys.readouterr().err
    assert not store.list("datasets/distill.teacher")  # the work area goes once the dataset holds the answers
    assert manifest["teacher"]["workers"] == 0
    answered = manifest["sources"][0]["answered"]
    assert answered == manifest["splits"]["train"]["rows"] and 0 < answered <= 300


@pytest.mark.slow
def test_ray_actors_answer_the_shards_in_parallel(setup, capsys):
    import ray

    store, config = setup
    try:
        manifest = run_builder(config(teacher_workers=2), store)
    finally:
        ray.shutdown()
    log = capsys.readouterr().err
    assert "2 shards on 2 Ray actors (CPU)" in log and "2/2 shards, 300/300 questions" in log
    assert manifest["teacher"]["workers"] == 2
    rows = load_split(store, "datasets/distill")["messages"]
    assert all(m[0]["role"] == "user" and m[1]["role"] == "assistant" and m[1]["content"] for m in rows)


def test_questions_come_from_a_renamed_column_a_nested_row_or_a_sharegpt_conversation(tmp_path):
    import json

    from slm.config import BuilderInput
    from slm.data_builders.distill import questions
    from slm.data_builders.sources import Source
    from slm.store import Store

    def source(rows, **item):
        path = tmp_path / f"in-{len(list(tmp_path.iterdir()))}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return Source(BuilderInput(path=str(path), **item), Store.open(str(tmp_path / "store")), "distill.yaml")

    renamed = source([{"ctx": "A man lifts a box and", "label": "2"}], columns={"ctx": "question"})
    assert [q for _, q in questions(renamed)] == [{"question": "A man lifts a box and"}]
    nested = source([{"train": {"question": "Which gas do plants take in?", "choices": ["O2", "CO2"]}}], field="train")
    assert [q for _, q in questions(nested)] == [{"question": "Which gas do plants take in?"}]
    shared = source([{"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Why?"}]}])
    assert [q for _, q in questions(shared)] == [{"question": "Why?"}]
