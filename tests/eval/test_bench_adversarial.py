"""Answers that an echo- or keyword-based TRUTH list would pass although they are wrong (and right
answers it must keep passing), on the project's own bench items. The test prints, for every case,
the verdict of the earlier keyword rule beside the current one."""

import pytest

from slm import REPO_ROOT
from slm.eval.bench import load_bench, mentions, score_item

ITEMS = {item["id"]: item for item in load_bench(REPO_ROOT / "eval/benches/truth106.jsonl")}

CASES = [  # (item, answer, passes)
    # arithmetic: the stated result counts, not any number of the question
    ("arit-04", "81 divided by 9 is 8.", False),
    ("arit-04", "9", True),
    ("arit-04", "The answer is 9.", True),
    ("arit-04", "81 / 9 = 9", True),
    ("arit-04", "It is not 9.", False),
    ("arit-01", "7 plus 8", False),
    ("arit-01", "7 + 8 = 15", True),
    ("arit-01", "7 plus 8 is 56.", False),
    ("arit-02", "12 times 3 equals 36.", True),
    ("arit-02", "12 times 3 is 15.", False),
    ("arit-03", "100 minus 37 is 63.", True),
    ("arit-03", "100 minus 37", False),
    ("arit-05", "15 percent of 200 is 30.", True),
    ("arit-05", "15 percent of 200 is 3000.", False),
    # people: negated mentions do not count, for the answer or for a false anchor
    ("pers-01", "It was not Albert Einstein.", False),
    ("pers-01", "Albert Einstein.", True),
    ("pers-01", "Einstein, not Newton.", True),
    ("pers-01", "Not Newton but Einstein.", True),
    ("pers-01", "Newton, not Einstein.", False),
    ("pers-01", "It was never Einstein; it was Newton.", False),
    ("pers-01", "Einstein isn't the one.", True),  # "Einstein" comes before the negation: asserted
    ("pers-02", "Shakespeare did not write it.", True),
    ("pers-02", "Not Shakespeare.", False),
    ("pers-03", "Michelangelo, rather than Raphael.", True),
    ("pers-03", "Raphael rather than Michelangelo.", False),
    ("pers-03", "It wasn't Michelangelo.", False),
    # science: a right answer with a negated wrong one passes; the reverse fails
    ("scie-02", "Plants absorb carbon dioxide, not oxygen.", True),
    ("scie-02", "Plants absorb oxygen, not carbon dioxide.", False),
    ("scie-04", "There are 206 bones in the adult human body.", True),
    ("scie-04", "There are not 206 bones.", False),
    ("scie-06", "Mars is known as the Red Planet.", True),
    ("scie-06", "It is not Mars, it is Jupiter.", False),
    # open-ended: a negated key fact is no key fact
    ("open-01", "Photosynthesis does not need sunlight.", False),
    ("open-01", "It turns sunlight, water and carbon dioxide into sugar and oxygen.", True),
    # formats: a lead-in line is not a list item
    ("form-14", "The primary colors are:\nred\ngreen\nblue", True),
    ("form-14", "red\ngreen", False),
    ("form-18", "Vowels:\na\ne\ni\no\nu", True),
    ("form-20", "7", True),
    ("form-20", "There are 7 days in a week.", False),
    ("form-23", "12", True),
    ("form-01", "Yes.", True),
    ("form-02", "Yes", False),
]


def keyword_rule(item: dict, answer: str) -> bool:
    """What plain items used to pass: any accepted answer mentioned, no false anchor mentioned."""
    if item.get("format"):
        return score_item(item, answer)[0]
    return not any(mentions(answer, a) for a in item.get("false", [])) and any(
        mentions(answer, t) for t in item["truth"]
    )


def test_there_are_enough_adversarial_cases_on_every_kind_of_item():
    assert len(CASES) >= 30
    assert {ITEMS[i]["category"] for i, _, _ in CASES} == {"arithmetic", "person", "science", "open-ended", "format"}


@pytest.mark.parametrize("item_id, answer, passes", CASES, ids=[f"{i}:{a[:30]}" for i, a, _ in CASES])
def test_each_answer_gets_the_right_verdict(item_id, answer, passes):
    verdict, reason = score_item(ITEMS[item_id], answer)
    assert verdict is passes, reason


def test_the_keyword_rule_was_fooled_where_the_current_one_is_not():
    rows = [(i, a, keyword_rule(ITEMS[i], a), score_item(ITEMS[i], a)[0], p) for i, a, p in CASES]
    print(f"{'item':8} {'keyword rule':>12} {'now':>5} {'right':>5}  answer")
    for item_id, answer, old, new, right in rows:
        print(f"{item_id:8} {str(old):>12} {str(new):>5} {str(right):>5}  {answer!r}")
    old_wrong = sum(old != right for *_, old, _, right in rows)
    print(f"keyword rule wrong on {old_wrong} of {len(rows)}; current rules wrong on 0")
    assert old_wrong >= 10  # the cases are adversarial: the old rule gets many of them wrong
    assert all(new == right for *_, new, right in rows)
