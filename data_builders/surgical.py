"""Surgical fine-tune: format-discipline items (yes/no, single letter, exact-N list, number only).

Each assistant answer is checked against the form its prompt asks for, so a malformed fixture
cannot teach the very habit this stage exists to remove.
"""

import re

from slm.data_builders.common import build_rows
from slm.errors import UserError

VERSION = "2"  # 2: any source kind and row format; deduplicated and decontaminated


def asked_form(prompt: str) -> tuple[str, int | None]:
    p = prompt.lower()
    if "yes or no" in p:
        return "yes_no", None
    if "single letter" in p:
        return "letter", None
    if m := re.search(r"exactly (\d+)", p):
        return "list", int(m.group(1))
    if "only the number" in p or "number only" in p:
        return "number", None
    return "free", None


def answer_fits(form: str, n: int | None, answer: str) -> bool:
    a = answer.strip()
    if form == "yes_no":
        return a.lower() in ("yes", "no")
    if form == "letter":
        return re.fullmatch(r"[A-Z]", a) is not None
    if form == "list":
        return len([line for line in a.splitlines() if line.strip()]) == n
    if form == "number":
        return re.fullmatch(r"-?\d+(\.\d+)?", a) is not None
    return True


def shape(row: dict, where: str) -> dict:
    user = next(m["content"] for m in row["messages"] if m["role"] == "user")
    answer = row["messages"][-1]["content"]
    form, n = asked_form(user)
    if not answer_fits(form, n, answer):
        raise UserError(
            f"{where}: surgical item does not answer in the asked form ({form}): {user[:60]!r} → {answer[:40]!r}"
        )
    return {**row, "form": form}


def form_counts(table, order) -> dict:
    per_row = [f for batch in table.batches() for f in batch.column("form").to_pylist()]
    forms = [per_row[i] for i in order]
    return {"forms": {f: forms.count(f) for f in sorted(set(forms))}}


def build(cfg, store, digest, evals=None, config_path=""):
    return build_rows(cfg, store, evals, config_path, VERSION, digest, shape=shape, extra=form_counts)
