"""The format-discipline data `make real` trains on: regenerated exactly from its generator, every row in
the form its prompt asks for, and no overlap with the bench it is judged on."""

import json

from slm.contamination import longest_common_run, overlap_report
from slm.data_builders.authored import format_discipline as authored
from slm.data_builders.surgical import answer_fits, asked_form


def committed_rows() -> list[dict]:
    return [json.loads(line) for line in authored.OUT.read_text().splitlines()]


def test_committed_file_is_the_generators_output():
    assert committed_rows() == authored.generate()


def test_every_row_answers_in_the_form_it_asks_for_across_all_four_forms():
    forms = {}
    for row in committed_rows():
        user, answer = (m["content"] for m in row["messages"])
        form, n = asked_form(user)
        assert answer_fits(form, n, answer), (user, answer)
        forms[form] = forms.get(form, 0) + 1
    assert set(forms) == {"yes_no", "letter", "number", "list"} and min(forms.values()) >= 40, forms


def test_no_bench_prompt_or_named_entity_is_in_the_training_rows():
    report = authored.bench_overlap(committed_rows())
    assert report["items"] == 106 and report["rows"] == len(committed_rows())
    assert report["contaminated"] == []
    assert report["longest_shared"]["words"] <= 8  # the instruction and "is the capital of", nothing more
    text = " ".join(m["content"] for row in committed_rows() for m in row["messages"])
    for entity in ("France", "Paris", "Australia", "Canberra", "sodium", "Einstein", "spider"):
        assert entity.lower() not in text.lower(), entity


def test_overlap_finds_long_ngrams_and_whole_short_items():
    items = [
        {
            "id": "long",
            "text": "Who proposed the theory of evolution by natural selection in the year eighteen fifty nine?",
        },
        {"id": "short", "text": "What is the capital of France?"},
    ]
    rows = [
        "Notes: who proposed the theory of evolution by natural selection in the year eighteen fifty, said Ann.",
        "Quiz — what is the CAPITAL of France? Paris.",
        "What is the capital of Kenya?",
    ]
    report = overlap_report(rows, items, n=13)
    assert [(c["id"], c["row"]) for c in report["contaminated"]] == [("long", 0), ("short", 1)]
    assert overlap_report(rows[2:], items, n=13)["contaminated"] == []
    assert longest_common_run("a b c d".split(), "x b c d y".split()) == 3


def test_the_held_out_set_shares_no_prompt_and_no_named_answer_with_any_authored_input():
    """eval/benches/heldout_facts.jsonl is read by no builder: no authored training input (the format rows,
    the self-replay questions) shares a 13-word run or a whole prompt with it, or names a place or person
    it asks for."""
    import re

    from slm.config import resolve_path
    from slm.eval.bench import load_bench

    heldout = load_bench(resolve_path("eval/benches/heldout_facts.jsonl"))
    assert len(heldout) >= 60 and {it["category"] for it in heldout} == {"geography", "person", "science"}
    questions = [json.loads(line)["question"] for line in (authored.HERE / "open_questions.jsonl").open()]
    texts = [" ".join(m["content"] for m in row["messages"]) for row in committed_rows()] + questions
    items = [{"id": it["id"], "text": it["prompt"]} for it in heldout]
    assert overlap_report(texts, items, n=13)["contaminated"] == []
    corpus = " ".join(texts).lower()
    named = [t for it in heldout if it["category"] in ("geography", "person") for t in it["truth"]]
    leaked = [t for t in named if re.search(rf"\b{re.escape(t.lower())}\b", corpus)]
    # "What is the largest desert in Asia?" (self-replay) names the continent, not that it is the largest
    assert leaked == ["Asia"], leaked


def test_no_builder_config_reads_an_evaluation_file():
    from pathlib import Path

    import yaml

    root = Path(authored.HERE).parents[1]
    configs = [*root.glob("data_builders/configs/*.yaml"), *root.glob("stages/examples/**/*-data.yaml")]
    assert configs
    for config in configs:
        text = yaml.safe_load(config.read_text())
        for source in text.get("inputs", []):
            assert "eval/benches" not in str(source.get("path", "")), (config, source)


def scaled_rows() -> list[dict]:
    return [json.loads(line) for line in authored.SCALED.read_text().splitlines()]


def right_answer(user: str) -> str | None:
    """The answer to an arithmetic, divisibility or counting row, computed here from its prompt."""
    import re

    ops = {"plus": lambda a, b: a + b, "minus": lambda a, b: a - b, "times": lambda a, b: a * b}
    ops["divided by"] = lambda a, b: a // b if a % b == 0 else None
    question = user.split("\n")[0]
    if m := re.search(r"Is (\d+) (plus|times) (\d+) equal to (\d+)\?", question):
        return "yes" if ops[m[2]](int(m[1]), int(m[3])) == int(m[4]) else "no"
    if m := re.search(r"Is (\d+) divisible by (\d+)\?", question):
        return "yes" if int(m[1]) % int(m[2]) == 0 else "no"
    if m := re.search(r"What is (\d+) (plus|minus|times|divided by) (\d+)\?", question):
        value = str(ops[m[2]](int(m[1]), int(m[3])))
        if "single letter" not in user:
            return value
        options = dict(re.findall(r"^([A-D])\. (.+)$", user, re.M))
        return next(letter for letter, text in options.items() if text == value)
    if m := re.search(r"How many hours are in (\d+) days\?", question):
        return str(24 * int(m[1]))
    if m := re.search(r"exactly (\d+) (whole|even) numbers greater than (\d+)", question):
        n, a = int(m[1]), int(m[3])
        step, first = (1, a + 1) if m[2] == "whole" else (2, a - a % 2 + 2)
        return "\n".join(str(first + step * i) for i in range(n))
    if m := re.search(r"exactly (\d+) multiples of (\d+) from (\d+) upwards", question):
        n, k, a = (int(x) for x in m.groups())
        first = -(-a // k) * k
        return "\n".join(str(first + k * i) for i in range(n))
    return None


def test_the_scaled_set_is_the_generators_output_3000_rows_every_one_in_form_and_right():
    """stages/examples/ff313's surgical set: the authored rows topped up to 3,000 with arithmetic,
    divisibility and counting rows, a quarter per form, no default answer, each answer recomputed here."""
    from collections import Counter

    rows = scaled_rows()
    assert rows == authored.generate(3000)
    assert len(rows) == 3000 and len({json.dumps(r) for r in rows}) == 3000
    forms, answers, checked = Counter(), Counter(), 0
    for row in rows:
        user, answer = (m["content"] for m in row["messages"])
        form, n = asked_form(user)
        assert answer_fits(form, n, answer), (user, answer)
        forms[form] += 1
        if form in ("yes_no", "letter"):
            answers[answer] += 1
        if (expected := right_answer(user)) is not None:
            assert answer == expected, (user, answer, expected)
            checked += 1
    assert forms == {"yes_no": 750, "letter": 750, "number": 750, "list": 750}
    assert answers["yes"] == answers["no"] == 375
    assert max(answers[x] for x in "ABCD") - min(answers[x] for x in "ABCD") <= 1, answers
    assert checked >= 2000  # the added rows and the authored arithmetic, recomputed


def test_the_scaled_set_survives_the_builders_dedup_and_shares_nothing_with_the_bench():
    from slm.config import HygieneSpec
    from slm.data_builders.common import hygiene_text
    from slm.data_builders.hygiene import Hygiene

    rows = scaled_rows()
    hygiene = Hygiene(HygieneSpec(decontaminate=False), None)
    source = hygiene.source("format_discipline_3000")
    for i, row in enumerate(rows):
        hygiene.add(source, hygiene_text(row), f"row {i}")
    keep = hygiene.finish()
    tally = hygiene.tallies[source]
    assert keep.all(), (tally.exact_duplicates, tally.near_duplicates)
    report = authored.bench_overlap(rows)
    assert report["contaminated"] == [] and report["longest_shared"]["words"] <= 8
