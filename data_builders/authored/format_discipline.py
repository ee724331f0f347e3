"""Format-discipline conversations for a real surgical stage (`make real`), written by this project.

Four forms, as the TRUTH bench asks them: yes/no, a single letter for a multiple-choice question,
a number only, exactly N items one per line. Each form is asked in several phrasings, over many
topics, from the fact tables below (common knowledge, written here). Nothing the bench asks is
taught: the countries, elements, people and numbers its items are about are left out of the
tables, and `python data_builders/authored/format_discipline.py --check` reports the n-gram overlap
between every row and every bench prompt (tests/data_builders/test_authored.py keeps it at zero).

    python data_builders/authored/format_discipline.py              # rewrite format_discipline.jsonl
    python data_builders/authored/format_discipline.py --rows 3000  # rewrite format_discipline_3000.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # run as a script from a checkout
OUT = HERE / "format_discipline.jsonl"
SCALED = HERE / "format_discipline_3000.jsonl"  # the FF_3.13 surgical set's size (stages/examples/ff313)
SEED = 2026

# Entities the bench names (its capitals, elements, animals) are removed from these tables at
# generation time (`bench_words`); planets, oceans and primary colours are left out by hand.
CAPITALS = {
    "Germany": "Berlin",
    "Japan": "Tokyo",
    "China": "Beijing",
    "India": "New Delhi",
    "Kenya": "Nairobi",
    "Canada": "Ottawa",
    "Mexico": "Mexico City",
    "Argentina": "Buenos Aires",
    "Peru": "Lima",
    "Chile": "Santiago",
    "Norway": "Oslo",
    "Sweden": "Stockholm",
    "Finland": "Helsinki",
    "Poland": "Warsaw",
    "Greece": "Athens",
    "Turkey": "Ankara",
    "Ireland": "Dublin",
    "Austria": "Vienna",
    "Hungary": "Budapest",
    "Thailand": "Bangkok",
    "Vietnam": "Hanoi",
    "Nigeria": "Abuja",
    "Cuba": "Havana",
    "Denmark": "Copenhagen",
    "Belgium": "Brussels",
    "Netherlands": "Amsterdam",
    "South Korea": "Seoul",
    "Indonesia": "Jakarta",
    "Colombia": "Bogota",
    "Ghana": "Accra",
    "Iceland": "Reykjavik",
    "Czechia": "Prague",
    "Romania": "Bucharest",
    "Ukraine": "Kyiv",
    "Pakistan": "Islamabad",
    "Philippines": "Manila",
    "New Zealand": "Wellington",
    "Ethiopia": "Addis Ababa",
    "Venezuela": "Caracas",
    "Bulgaria": "Sofia",
}
ELEMENTS = {
    "helium": "He",
    "nitrogen": "N",
    "magnesium": "Mg",
    "aluminium": "Al",
    "silicon": "Si",
    "sulfur": "S",
    "chlorine": "Cl",
    "potassium": "K",
    "calcium": "Ca",
    "iron": "Fe",
    "copper": "Cu",
    "zinc": "Zn",
    "silver": "Ag",
    "tin": "Sn",
    "gold": "Au",
    "mercury": "Hg",
    "lead": "Pb",
    "uranium": "U",
    "nickel": "Ni",
    "iodine": "I",
    "neon": "Ne",
    "argon": "Ar",
    "fluorine": "F",
    "lithium": "Li",
    "platinum": "Pt",
}
KINDS = {
    "mammal": ["whale", "bat", "horse", "tiger", "rabbit", "elephant", "goat", "wolf", "camel", "otter"],
    "bird": ["eagle", "penguin", "sparrow", "owl", "parrot", "swan", "ostrich", "pigeon", "crow", "heron"],
    "fish": ["salmon", "cod", "tuna", "carp", "herring", "sardine", "mackerel", "perch", "pike"],
    "reptile": ["lizard", "crocodile", "tortoise", "iguana", "cobra", "gecko", "python", "alligator", "chameleon"],
    "insect": ["ant", "bee", "beetle", "butterfly", "mosquito", "grasshopper", "wasp", "moth", "termite"],
}
LEGS = {
    "spider": None,
    "ant": 6,
    "dog": 4,
    "chicken": 2,
    "horse": 4,
    "beetle": 6,
    "duck": 2,
    "cat": 4,
    "bee": 6,
    "crab": 10,
    "octopus": None,
    "cow": 4,
    "ostrich": 2,
    "frog": 4,
}
LISTS = {
    "fruits": ["apple", "banana", "cherry", "grape", "mango", "orange", "pear", "plum", "peach", "lemon"],
    "vegetables": ["carrot", "potato", "onion", "spinach", "broccoli", "cabbage", "pea", "leek", "celery"],
    "musical instruments": ["piano", "violin", "guitar", "flute", "drum", "trumpet", "cello", "harp", "oboe"],
    "days of the week": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
    "months of the year": [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ],
    "European countries": [
        "Germany",
        "Norway",
        "Sweden",
        "Poland",
        "Greece",
        "Austria",
        "Ireland",
        "Hungary",
        "Denmark",
        "Belgium",
        "Finland",
        "Romania",
    ],
    "Asian countries": [
        "Japan",
        "China",
        "India",
        "Thailand",
        "Vietnam",
        "Indonesia",
        "Pakistan",
        "Nepal",
        "Mongolia",
        "Laos",
    ],
    "metals": ["iron", "copper", "zinc", "silver", "gold", "tin", "lead", "nickel", "platinum"],
    "sports": ["football", "tennis", "cricket", "rugby", "golf", "hockey", "basketball", "volleyball"],
    "mammals": KINDS["mammal"],
    "birds": KINDS["bird"],
    "fish": KINDS["fish"],
}
YES_NO = ["Answer yes or no only.", "Answer with yes or no.", "Reply yes or no only.", "Yes or no only, please."]
LETTER = ["Reply with a single letter.", "Answer with a single letter only.", "Respond with a single letter."]
NUMBER = ["Give only the number.", "Answer with the number only.", "Reply with the number only."]
LIST = [
    "List exactly {n} {what}, one per line, nothing else.",
    "Name exactly {n} {what}, one per line, nothing else.",
    "Write exactly {n} {what}, one per line, with no other text.",
]
# The bench's numbers (its arithmetic and number-only items) are not used as operands here.
BENCH_NUMBERS = {7, 8, 9, 12, 15, 17, 25, 37, 42, 72, 81, 100, 144, 200}
NEAR = (-10, -2, -1, 1, 2, 10)  # how far a wrong number sits from the right one


def chat(user: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def operand(rng: random.Random, low: int, high: int) -> int:
    while (x := rng.randint(low, high)) in BENCH_NUMBERS:
        pass
    return x


def yes_no_rows(rng: random.Random) -> list[dict]:
    """Every fact asked both ways, true and false, so the answer is never a default: "yes" and "no" are
    exactly as frequent, and the same subject appears under both (the first version drew one at
    random per fact, 73 no to 50 yes, and the model it trained answered "no" to every bench item)."""
    rows, countries = [], list(CAPITALS)
    for country in countries:
        other = CAPITALS[rng.choice([c for c in countries if c != country])]
        rows += [
            (f"Is {CAPITALS[country]} the capital of {country}?", True),
            (f"Is {other} the capital of {country}?", False),
        ]
    for name, symbol in ELEMENTS.items():
        other = rng.choice([s for s in ELEMENTS.values() if s != symbol])
        rows += [
            (f"Is {symbol} the chemical symbol of {name}?", True),
            (f"Is {other} the chemical symbol of {name}?", False),
        ]
    for kind, animals in KINDS.items():
        for animal in rng.sample(animals, 5):
            other = rng.choice([k for k in KINDS if k != kind])
            rows += [(f"Is a {animal} a {kind}?", True), (f"Is a {animal} a {other}?", False)]
    for _ in range(20):
        a, b = operand(rng, 2, 99), operand(rng, 2, 99)
        if a != b:
            rows += [(f"Is {a} greater than {b}?", a > b), (f"Is {b} greater than {a}?", b > a)]
    for _ in range(12):
        a = operand(rng, 18, 98)
        rows += [(f"Is {a} an odd number?", a % 2 == 1), (f"Is {a} an even number?", a % 2 == 0)]
    return [chat(f"{rng.choice(YES_NO)} {q}", "yes" if truth else "no") for q, truth in rows]


def mcq(rng: random.Random, question: str, right: str, wrong: list[str], position: int) -> dict:
    options = rng.sample(wrong, 3)
    options.insert(position, right)
    body = "\n".join(f"{letter}. {option}" for letter, option in zip("ABCD", options))
    return chat(f"{rng.choice(LETTER)} {question}\n{body}", "ABCD"[position])


def letter_rows(rng: random.Random) -> list[dict]:
    """Each question twice, its answer at two different letters, the letters cycled so that A, B, C and D
    are right equally often: the reply has to come from the options, not from a favourite letter."""
    questions = []
    cities = list(CAPITALS.values())
    for country, city in CAPITALS.items():
        questions.append((f"What is the capital of {country}?", city, [c for c in cities if c != city]))
    symbols = list(ELEMENTS.values())
    for name, symbol in ELEMENTS.items():
        questions.append((f"Which is the chemical symbol of {name}?", symbol, [s for s in symbols if s != symbol]))
    for kind, animals in KINDS.items():
        others = [a for k, members in KINDS.items() if k != kind for a in members]
        for animal in rng.sample(animals, 5):
            questions.append((f"Which of these is a {kind}?", animal, others))
    for _ in range(20):
        a, b = operand(rng, 11, 60), operand(rng, 11, 60)
        wrong = sorted({a + b + d for d in NEAR} - {a + b})
        questions.append((f"What is {a} plus {b}?", str(a + b), [str(w) for w in wrong]))
    rows = []
    for k, (question, right, wrong) in enumerate(questions):
        rows += [mcq(rng, question, right, wrong, k % 4), mcq(rng, question, right, wrong, (k + 2) % 4)]
    return rows


def number_rows(rng: random.Random) -> list[dict]:
    rows = []
    for _ in range(35):
        a, b = operand(rng, 3, 29), operand(rng, 3, 29)
        rows.append((f"What is {a} times {b}?", a * b))
    for _ in range(35):
        a, b = operand(rng, 20, 90), operand(rng, 2, 19)
        rows.append((f"What is {a} minus {b}?", a - b))
    for _ in range(30):
        a, b = operand(rng, 13, 80), operand(rng, 13, 80)
        rows.append((f"What is {a} plus {b}?", a + b))
    for days in (2, 3, 4, 5):
        rows.append((f"How many hours are in {days} days?", 24 * days))
    for animal, legs in LEGS.items():
        if legs is not None:
            rows.append((f"How many legs does a {animal} have?", legs))
    return [chat(f"{rng.choice(NUMBER)} {q}", str(answer)) for q, answer in rows]


def list_rows(rng: random.Random) -> list[dict]:
    rows = []
    for what, members in LISTS.items():
        for n in (2, 3, 4, 5):
            if n <= len(members):
                picked = rng.sample(members, n)
                rows.append(chat(rng.choice(LIST).format(n=n, what=what), "\n".join(picked)))
    return rows


def bench_prompts() -> list[dict]:
    from slm.jsonl import read_objects

    return [item for _, item in read_objects(HERE.parents[1] / "eval/benches/truth106.jsonl", what="bench")]


def bench_words() -> set[str]:
    from slm.text import normalize

    return {w for item in bench_prompts() for w in normalize(item["prompt"]).split()}


def leave_out_bench_entities() -> None:
    """Drop from the tables every country, element and animal a bench prompt names."""
    named = bench_words()
    mentioned = lambda name: any(w in named for w in name.lower().split())  # noqa: E731
    for country in [c for c in CAPITALS if mentioned(c) or mentioned(CAPITALS[c])]:
        del CAPITALS[country]
    for element in [e for e in ELEMENTS if mentioned(e)]:
        del ELEMENTS[element]
    for _kind, animals in KINDS.items():
        animals[:] = [a for a in animals if not mentioned(a)]
    for _what, members in LISTS.items():
        members[:] = [m for m in members if not mentioned(m)]


FORMS = ("yes_no", "letter", "number", "list")


def near(rng: random.Random, x: int) -> int:
    """A wrong value close to x, never x."""
    return x + rng.choice(NEAR)


def more_yes_no(rng: random.Random):
    """Arithmetic and divisibility facts, each asked true and false (yes and no equally often)."""
    while True:
        a, b = operand(rng, 11, 99), operand(rng, 3, 29)
        k, m = rng.choice([2, 3, 4, 5, 6]), operand(rng, 5, 40)
        pairs = {
            "plus": (f"Is {a} plus {b} equal to {a + b}?", f"Is {a} plus {b} equal to {near(rng, a + b)}?"),
            "times": (f"Is {b} times {k} equal to {b * k}?", f"Is {b} times {k} equal to {near(rng, b * k)}?"),
            "divisible": (f"Is {k * m} divisible by {k}?", f"Is {k * m + 1} divisible by {k}?"),
        }
        yes, no = pairs[rng.choice(list(pairs))]
        yield [(yes, "yes"), (no, "no")]


def more_letters(rng: random.Random):
    """Arithmetic questions with four options (the right one placed by extra_rows)."""
    while True:
        a, b = operand(rng, 11, 89), operand(rng, 3, 29)
        question, right = rng.choice(
            [(f"What is {a} plus {b}?", a + b), (f"What is {a} minus {b}?", a - b), (f"What is {a} times {b}?", a * b)]
        )
        wrong = sorted({right + d for d in NEAR} - {right})
        yield [(question, (right, [str(w) for w in wrong]))]


def more_numbers(rng: random.Random):
    while True:
        a, b, h = operand(rng, 11, 99), operand(rng, 3, 29), operand(rng, 2, 60)
        yield [
            rng.choice(
                [
                    (f"What is {a} plus {b}?", a + b),
                    (f"What is {a} minus {b}?", a - b),
                    (f"What is {a} times {b}?", a * b),
                    (f"What is {a * b} divided by {b}?", a),
                    # hours in days, as the authored rows ask (the bench asks minutes in an hour, days in a week)
                    (f"How many hours are in {h} days?", 24 * h),
                ]
            )
        ]


def more_lists(rng: random.Random):
    while True:
        n, a, k = rng.randint(2, 6), operand(rng, 10, 500), rng.choice([3, 4, 5, 6, 11])
        start = a + (k - a % k) % k  # the first multiple of k at or above a
        what, members = rng.choice(
            [
                (f"whole numbers greater than {a}", [a + i for i in range(1, n + 1)]),
                (f"even numbers greater than {a}", [a - a % 2 + 2 * i for i in range(1, n + 1)]),
                (f"multiples of {k} from {a} upwards", [start + k * i for i in range(n)]),
            ]
        )
        yield [(f"{n} {what}", (what, members))]


def extra_rows(rng: random.Random, form: str, count: int, seen: set[str], letters: dict[str, int]) -> list[dict]:
    """`count` more rows of one form, none asking a question already asked; a letter row's answer goes to
    the letter right least often so far (`letters`, counted on), so that A-D end up equally frequent."""
    source = {"yes_no": more_yes_no, "letter": more_letters, "number": more_numbers, "list": more_lists}[form](rng)
    rows = []
    while len(rows) < count:
        group = next(source)  # a yes/no pair is kept or dropped whole: "yes" and "no" stay equally frequent
        if any(question in seen for question, _ in group):
            continue
        for question, answer in group[: count - len(rows)]:
            seen.add(question)
            if form == "yes_no":
                rows.append(chat(f"{rng.choice(YES_NO)} {question}", answer))
            elif form == "letter":
                right, wrong = answer
                letter = min("ABCD", key=lambda x: letters[x])
                letters[letter] += 1
                rows.append(mcq(rng, question, str(right), wrong, "ABCD".index(letter)))
            elif form == "number":
                rows.append(chat(f"{rng.choice(NUMBER)} {question}", str(answer)))
            else:
                what, members = answer
                rows.append(chat(rng.choice(LIST).format(n=len(members), what=what), "\n".join(map(str, members))))
    return rows


def question_of(row: dict) -> str:
    """The question a row asks, without its form instruction (the first sentence of its first line)."""
    return row["messages"][0]["content"].split("\n")[0].split(". ", 1)[-1]


def generate(total: int | None = None) -> list[dict]:
    """The authored rows (564); with `total`, scaled to that many by arithmetic, divisibility and
    counting questions of the same four forms, the forms topped up towards a quarter of the total each."""
    from slm.data_builders.surgical import asked_form

    leave_out_bench_entities()
    rng = random.Random(SEED)
    rows = yes_no_rows(rng) + letter_rows(rng) + number_rows(rng) + list_rows(rng)
    if total is not None:
        if total < len(rows):
            raise ValueError(f"--rows {total}: the authored set alone has {len(rows)} rows")
        rng = random.Random(SEED + total)
        # a question the authored rows ask twice (an odd/even operand drawn again) is kept once: the
        # builder's near-dedup would drop the second anyway
        unique = {question_of(r): r for r in reversed(rows)}
        rows = [r for r in rows if unique.get(question_of(r)) is r]
        forms = [asked_form(r["messages"][0]["content"])[0] for r in rows]
        have = {form: forms.count(form) for form in FORMS}
        need = {form: max(0, -(-total // 4) - have[form]) for form in FORMS}
        while len(rows) + sum(need.values()) > total:  # ceil quotas overshoot: trim the largest top-ups
            need[max(need, key=need.get)] -= 1
        seen = {question_of(r) for r in rows}
        answers = [r["messages"][1]["content"] for r, form in zip(rows, forms) if form == "letter"]
        letters = {x: answers.count(x) for x in "ABCD"}
        for form in FORMS:
            rows += extra_rows(rng, form, need[form], seen, letters)
    rng.shuffle(rows)
    return rows


def bench_overlap(rows: list[dict], n: int = 13) -> dict:
    """The n-gram overlap of every row (prompt and answer) with every bench prompt."""
    from slm.contamination import overlap_report

    items = [{"id": it["id"], "text": it["prompt"]} for it in bench_prompts()]
    texts = [" ".join(m["content"] for m in row["messages"]) for row in rows]
    return overlap_report(texts, items, n)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="report the overlap with the bench, write nothing")
    p.add_argument("--rows", type=int, default=None, help=f"scale to this many rows (written to {SCALED.name})")
    args = p.parse_args()
    rows = generate(args.rows)
    out = OUT if args.rows is None else SCALED.with_name(f"format_discipline_{args.rows}.jsonl")
    if args.check:
        report = bench_overlap(rows)
        print(json.dumps({k: report[k] for k in ("n", "rows", "items", "contaminated", "longest_shared")}, indent=1))
        return
    with out.open("w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{len(rows)} rows → {out}")


if __name__ == "__main__":
    main()
