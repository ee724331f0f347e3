"""The TRUTH-list bench: scoring rules, the shipped 106-prompt bench, and bench-file validation."""

import json
from collections import Counter

import pytest

from slm import REPO_ROOT
from slm.errors import UserError
from slm.eval.bench import load_bench, run_bench, score_item, summarize


def item(truth, false=None, fmt=None, category="science"):
    out = {"id": "x", "category": category, "prompt": "q", "truth": truth}
    if false:
        out["false"] = false
    if fmt:
        out["format"] = fmt
    return out


def test_shipped_bench_has_106_prompts_in_the_published_categories():
    items = load_bench(REPO_ROOT / "eval/benches/truth106.jsonl")
    assert len(items) == 106
    assert Counter(i["category"] for i in items) == {
        "arithmetic": 5,
        "open-ended": 1,
        "person": 25,
        "science": 25,
        "geography": 25,
        "format": 25,
    }
    assert Counter(i["format"]["type"] for i in items if "format" in i) == {
        "yes_no": 7,
        "letter": 6,
        "list": 6,
        "number": 6,
    }


def test_truth_matching_is_whole_word_and_normalised():
    assert score_item(item(["Paris"]), "The capital is Paris.")[0]
    assert score_item(item(["Brasília"]), "It is brasilia")[0]
    assert score_item(item(["300,000"]), "about 300000 km/s")[0]
    assert not score_item(item(["Au"]), "Gold is Aurum")[0]  # no partial-word hits
    assert not score_item(item(["Paris"]), "I do not know")[0]


def test_false_anchor_fails_even_with_a_truth_hit():
    telephone = item(["Alexander Graham Bell", "Bell"], false=["Edison"])
    assert score_item(telephone, "Alexander Graham Bell")[0]
    passed, reason = score_item(telephone, "Thomas Edison, not Bell")
    assert not passed and "false anchor" in reason


@pytest.mark.parametrize("answer,ok", [("yes", True), ("Yes.", True), ("no", False), ("Yes, it is Paris", False)])
def test_yes_no_format(answer, ok):
    assert score_item(item(["yes"], fmt={"type": "yes_no"}), answer)[0] is ok


@pytest.mark.parametrize("answer,ok", [("B", True), ("b.", True), ("(B)", True), ("B. Dolphin", False), ("C", False)])
def test_single_letter_format(answer, ok):
    assert score_item(item(["B"], fmt={"type": "letter"}), answer)[0] is ok


@pytest.mark.parametrize(
    "answer,ok", [("72", True), ("72.", True), ("72.0", True), ("The answer is 72", False), ("71", False)]
)
def test_number_only_format(answer, ok):
    assert score_item(item(["72"], fmt={"type": "number"}), answer)[0] is ok


def test_exact_n_list_format():
    colors = item(["red", "green", "blue"], fmt={"type": "list", "n": 3})
    assert score_item(colors, "red\ngreen\nblue")[0]
    assert score_item(colors, "1. Red\n2. Green\n3. Blue")[0]
    assert score_item(colors, "red, green, blue")[0]
    assert score_item(colors, "red\ngreen")[1] == "2 items, asked for 3"
    assert score_item(colors, "red\ngreen\npurple")[1] == "an item outside the accepted list"
    assert score_item(item([], fmt={"type": "list", "n": 2}), "Peru\nChile")[0]


def test_summary_per_category():
    items = [item(["a"], category="x"), item(["b"], category="x"), item(["c"], category="y")]
    s = summarize(items, ["a", "no", "c"])
    assert s["passed"] == 2 and s["categories"]["x"] == {"passed": 1, "total": 2, "score": 0.5, "form": 2}
    assert s["form"] == 3 and s["formats"] == {}  # "no" asserts an answer (a wrong one): in form, not correct


def test_form_is_kept_apart_from_correctness_beside_a_constant_answerer():
    yes_no = [
        {**item([t], category="yn"), "id": f"yn{k}", "format": {"type": "yes_no"}}
        for k, t in enumerate(["yes", "no", "no", "no"])
    ]
    letters = [
        {**item([t], category="abc"), "id": f"l{k}", "format": {"type": "letter"}}
        for k, t in enumerate(["A", "B", "C", "A"])
    ]
    items = yes_no + letters
    always_yes_and_a = ["Yes"] * 4 + ["A"] * 4
    s = summarize(items, always_yes_and_a)
    assert s["categories"]["yn"] == {"passed": 1, "total": 4, "score": 0.25, "form": 4}
    yn, abc = s["formats"]["yes_no"], s["formats"]["letter"]
    assert yn["constant"] == {"answer": "no", "passed": 3} and yn["bias"] == {"answer": "yes", "share": 1.0}
    assert abc["passed"] == 2 and abc["constant"] == {"answer": "A", "passed": 2} and not abc["beats_constant"]
    right = summarize(items, ["yes", "no", "no", "no", "A", "B", "C", "A"])
    assert right["formats"]["yes_no"]["beats_constant"] and right["formats"]["letter"]["beats_constant"]
    rambling = summarize(items, ["I think so, yes."] * 4 + ["The answer is A."] * 4)
    assert rambling["form"] == 0 and rambling["formats"]["letter"]["bias"] == {"answer": None, "share": 0.0}
    from slm.eval.scores import BenchScores

    typed = BenchScores.model_validate(rambling)  # and the stored form (None left out) loads back
    assert BenchScores.model_validate(typed.to_json()) == typed


@pytest.mark.parametrize(
    "line,message",
    [
        ("{oops", "not valid JSON"),
        (json.dumps({"id": "a", "category": "c", "prompt": "p"}), "`truth` must be a list"),
        (
            json.dumps({"id": "a", "category": "c", "prompt": "p", "truth": ["x"], "extra": 1}),
            "unknown key\\(s\\) extra",
        ),
        (
            json.dumps({"id": "a", "category": "c", "prompt": "p", "truth": ["x"], "format": {"type": "poem"}}),
            "`format` must be",
        ),
        (json.dumps({"id": "a", "category": "c", "prompt": "p", "truth": []}), "`truth` may only be empty for list"),
    ],
)
def test_malformed_bench_names_the_line(tmp_path, line, message):
    good = json.dumps({"id": "ok", "category": "c", "prompt": "p", "truth": ["x"]})
    path = tmp_path / "bench.jsonl"
    path.write_text(good + "\n" + line + "\n")
    with pytest.raises(UserError, match=f"bench.jsonl:2: {message}"):
        load_bench(path)


def test_runner_generates_greedily_with_the_chat_template(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tiny_model_dir(1)
    model, tok = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    items = load_bench(REPO_ROOT / "eval/benches/truth106.jsonl")[:4]
    first = run_bench(model, tok, items, max_new_tokens=6)
    second = run_bench(model, tok, items, max_new_tokens=6, batch_size=1)
    assert [i["answer"] for i in first["items"]] == [i["answer"] for i in second["items"]]  # greedy, padding-safe
    assert first["total"] == 4


def test_jsonl_lines_may_hold_unicode_line_separators(tmp_path):
    path = tmp_path / "bench.jsonl"
    path.write_text(
        json.dumps({"id": "a", "category": "c", "prompt": "one\u2028two", "truth": ["x"]}, ensure_ascii=False) + "\n"
    )
    assert load_bench(path)[0]["prompt"] == "one\u2028two"


def _item(truth, fmt=None, prompt="What is the freezing point of water at sea level in degrees Celsius?"):
    item = {"id": "n", "category": "science", "prompt": prompt, "truth": truth}
    return {**item, "format": fmt} if fmt else item


@pytest.mark.parametrize(
    "item, answer, passes",
    [
        # a number inside a number is not the number (it passed as "matched '0'" before)
        (_item(["0"]), "The freezing point of water at sea level is -18.0°C.", False),
        (_item(["0"]), "It freezes at 0 °C.", True),
        (_item(["0"]), "Water freezes at 0.0 degrees Celsius.", True),
        (_item(["0"]), "It is 10 degrees.", False),
        (_item(["-40"], prompt="At what temperature are Celsius and Fahrenheit equal?"), "At -40 degrees.", True),
        (_item(["-40"], prompt="At what temperature are Celsius and Fahrenheit equal?"), "At 40 degrees.", False),
        (_item(["1,000"], prompt="How many grams are in a kilogram?"), "There are 1000 grams.", True),
        (_item(["1,000"], prompt="How many grams are in a kilogram?"), "There are 1,000,000 grams.", False),
        (_item(["1,000"], prompt="How many grams are in a kilogram?"), "There are 1.000 grams.", False),
        (_item(["0.5"], prompt="What is a half as a decimal?"), "It is 1/2.", True),
        (_item(["0.5"], prompt="What is a half as a decimal?"), "It is 1/20.", False),
        (_item(["10%"], prompt="What share is one tenth?"), "It is 10 percent.", True),
        (_item(["10%"], prompt="What share is one tenth?"), "It is 100%.", False),
        (_item(["0"]), "It is not 0, it is 4.", False),
        # number-only items: the reply is one whole number
        (_item(["-7"], {"type": "number"}), "-7", True),
        (_item(["-7"], {"type": "number"}), "7", False),
        (_item(["123"], {"type": "number"}), "1,2,3", False),
        (_item(["3.5"], {"type": "number"}), "3.5.", True),
        (_item(["1000"], {"type": "number"}), "1,000", True),
    ],
)
def test_a_stated_number_is_one_whole_number(item, answer, passes):
    from slm.eval.bench import score_item

    assert score_item(item, answer)[0] is passes, score_item(item, answer)


def test_a_prompt_longer_than_the_models_context_is_refused_not_cut(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tiny_model_dir(seed=3, n_positions=40)
    model, tok = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    items = [{"id": "long", "category": "c", "prompt": "Tell me about rivers. " * 10, "truth": ["water"]}]
    with pytest.raises(
        UserError,
        match=r"prompt 'Tell me about rivers.*plus 8 new tokens: \d+ tokens, more than the model's context of 40",
    ):
        run_bench(model, tok, items, max_new_tokens=8)
