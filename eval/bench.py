"""Prompt benches scored by TRUTH lists (format documented in eval/benches/README.md).

A prompt passes when the greedy answer asserts one of its accepted answers (whole words, after
normalising case, accents and punctuation; not in a negated clause; not an echo of the prompt;
for a calculation, its stated result) and asserts none of its FALSE anchors. Format items check
the asked form instead of (or as well as) content: yes/no, a single letter, exactly N items, a
number. The rules are stated in eval/benches/README.md.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

from slm.chat import prompt_text
from slm.errors import UserError
from slm.jsonl import read_objects
from slm.modeling import context_length
from slm.text import normalize

FORMATS = {"yes_no", "letter", "list", "number"}
MAX_PROMPT_CHARS = 4000
MAX_ITEM_CHARS = 16_000  # a line: prompt, accepted answers and anchors together
MAX_FILE_BYTES = 16 << 20
MAX_ITEMS = 10_000  # every candidate of every sweep generates an answer to each
ITEM_KEYS = {"id", "category", "prompt", "truth", "false", "format"}


def load_bench(path: str | Path) -> list[dict]:
    file = Path(path)
    if file.is_file() and file.stat().st_size > MAX_FILE_BYTES:
        raise UserError(
            f"{file}: {file.stat().st_size:,} bytes; a bench file is at most {MAX_FILE_BYTES:,} "
            f"(see eval/benches/README.md)"
        )
    items, seen = [], set()
    rows = read_objects(file, what="bench")
    if len(rows) > MAX_ITEMS:
        raise UserError(
            f"{file}: {len(rows):,} items; a bench is at most {MAX_ITEMS:,} (each candidate answers every item)"
        )
    for number, item in rows:
        where = f"{file}:{number}"
        unknown = set(item) - ITEM_KEYS
        if unknown:
            raise UserError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        for key in ("id", "category", "prompt"):
            if not isinstance(item.get(key), str) or not item[key].strip():
                raise UserError(f"{where}: `{key}` must be a non-empty string")
        if len(item["prompt"]) > MAX_PROMPT_CHARS:
            raise UserError(
                f"{where}: prompt of {len(item['prompt']):,} characters; a bench prompt is at most "
                f"{MAX_PROMPT_CHARS:,} (every candidate generates from it, batched)"
            )
        size = len(json.dumps(item, ensure_ascii=False))
        if size > MAX_ITEM_CHARS:
            raise UserError(
                f"{where}: an item of {size:,} characters; a bench item is at most {MAX_ITEM_CHARS:,} "
                f"(see eval/benches/README.md)"
            )
        if item["id"] in seen:
            raise UserError(f"{where}: duplicate id {item['id']!r}")
        seen.add(item["id"])
        truth, false, fmt = item.get("truth"), item.get("false", []), item.get("format")
        if not isinstance(truth, list) or not all(isinstance(t, str) and t.strip() for t in truth):
            raise UserError(f"{where}: `truth` must be a list of non-empty strings")
        if not isinstance(false, list) or not all(isinstance(t, str) and t.strip() for t in false):
            raise UserError(f"{where}: `false` must be a list of non-empty strings")
        if fmt is not None:
            if not isinstance(fmt, dict) or fmt.get("type") not in FORMATS or set(fmt) - {"type", "n"}:
                raise UserError(f"{where}: `format` must be {{type: {'|'.join(sorted(FORMATS))}[, n]}}")
            if fmt["type"] == "list" and not (isinstance(fmt.get("n"), int) and fmt["n"] > 0):
                raise UserError(f"{where}: a list format needs a positive integer `n`")
        if not truth and (fmt is None or fmt["type"] != "list"):
            raise UserError(f"{where}: `truth` may only be empty for list-format items")
        if fmt is not None:
            check_passable(where, fmt["type"], truth)
        items.append(item)
    return items


def check_passable(where: str, fmt: str, truth: list[str]) -> None:
    """A format item whose accepted answers are not of its own form could never pass (score_item
    refuses any answer not in the form before it compares)."""
    if fmt == "yes_no" and (len(truth) != 1 or normalize(truth[0]) not in ("yes", "no")):
        raise UserError(f'{where}: a yes_no item\'s `truth` is ["yes"] or ["no"], not {truth}')
    if fmt == "letter" and not all(re.fullmatch(r"[A-Za-z]", t.strip()) for t in truth):
        raise UserError(f"{where}: a letter item's `truth` holds single letters, not {truth}")
    if fmt == "number" and not all(parse_number(t) is not None for t in truth):
        raise UserError(f"{where}: a number item's `truth` holds numbers, not {truth}")


def whole_words(phrase: str) -> re.Pattern:
    """The normalised phrase as whole words, to search normalised text."""
    return re.compile(rf"(?<!\w){re.escape(normalize(phrase))}(?!\w)")


def mentions(answer: str, phrase: str) -> bool:
    target = parse_number(phrase)
    if target is not None:
        return any(v == target for v, _ in stated_numbers(answer))
    return whole_words(phrase).search(normalize(answer)) is not None


# What makes a bench hard to fool: an accepted answer counts only where the answer asserts it.
# Clauses end at sentence punctuation, commas (not thousands separators), "but" and "however";
# a mention counts only when nothing before it in its clause negates it ("isn't" normalises to "isn t").
CLAUSE_END = re.compile(r"[;!?\n]|\.(?!\d)|(?<!\d),|,(?!\d{3})|\bbut\b|\bhowever\b", re.IGNORECASE)
NEGATION = re.compile(r"\b(not|never|no|nor|neither|t|without|rather than|instead of)\b")


def clauses(answer: str) -> list[str]:
    return [c for c in (normalize(part) for part in CLAUSE_END.split(answer)) if c]


# A stated number is one number: its sign, thousands separators, decimals, a fraction or a percent
# belong to it ("-18.0" is not "0" and not "18"; "1,000" is one thousand; "1/2" is a half). Read from
# the reply as written: normalize() drops signs and would split "-18.0" into words that match "0".
WHOLE_NUMBER = re.compile(
    r"(?<![\w.,/])(?P<sign>[-\u2212+]?)(?P<int>\d{1,3}(?:,\d{3})+|\d+)(?:\.(?P<frac>\d+))?"
    r"(?:/(?P<den>\d+))?(?P<pct>\s*%|\s+percent\b)?(?![\w]|[.,/]\d)"
)


def _value(m: re.Match) -> float | None:
    value = float(m["int"].replace(",", "") + (f".{m['frac']}" if m["frac"] else ""))
    if m["den"] is not None:
        if int(m["den"]) == 0:
            return None
        value /= int(m["den"])
    return -value if m["sign"] in ("-", "\u2212") else value


def parse_number(text: str) -> float | None:
    """`text` as one whole number (see WHOLE_NUMBER), or None when it is not exactly one."""
    m = WHOLE_NUMBER.fullmatch(text.strip().rstrip("."))
    return _value(m) if m else None


def stated_numbers(clause: str) -> list[tuple[float, int]]:
    """(value, offset) of every whole number in a clause as written."""
    return [(v, m.start()) for m in WHOLE_NUMBER.finditer(clause) if (v := _value(m)) is not None]


def _negated(clause: str, at: int) -> bool:
    return NEGATION.search(normalize(clause[:at])) is not None


def asserts(answer: str, phrase: str) -> bool:
    """The answer states `phrase`: a whole-word mention in a clause with no negation before it (for a
    number, the same whole number: value, sign and all)."""
    target = parse_number(phrase)
    if target is not None:
        return any(
            v == target and not _negated(clause, at)
            for clause in CLAUSE_END.split(answer)
            for v, at in stated_numbers(clause)
        )
    pattern = whole_words(phrase)
    for clause in clauses(answer):
        for m in pattern.finditer(clause):
            if not NEGATION.search(clause[: m.start()]):
                return True
    return False


def is_number(text: str) -> bool:
    return parse_number(text) is not None


STATED_AFTER = re.compile(r"\b(?:is|equals|equal to|makes|gives)\s+$", re.IGNORECASE)


def stated_result(answer: str) -> float | None:
    """The number an answer gives as its result: the first one after is/=/equals in a clause without
    negation, else the last number not negated in its clause."""
    last = None
    for clause in CLAUSE_END.split(answer.replace("=", " equals ")):
        found = [(v, at) for v, at in stated_numbers(clause) if not _negated(clause, at)]
        stated = next((v for v, at in found if STATED_AFTER.search(clause[:at])), None)
        if stated is not None:
            return stated
        if found:
            last = found[-1][0]
    return last


def list_items(answer: str) -> list[str]:
    lines = [l.strip(" -*\t") for l in answer.strip().splitlines() if l.strip(" -*\t")]
    if len(lines) > 1 and lines[0].endswith(":"):  # a lead-in ("The primary colors are:") is not an item
        lines = lines[1:]
    if len(lines) == 1 and "," in lines[0]:
        lines = [p.strip() for p in lines[0].split(",") if p.strip()]
    return [re.sub(r"^\d+[.)]\s*", "", l) for l in lines]


LETTER_REPLY = re.compile(r"\(?([A-Za-z])[.)]?")  # B, B. or (B)


def is_calculation(item: dict) -> bool:
    """A calculation: its accepted answers are numbers and its prompt has numbers in it."""
    return bool(item["truth"] and all(is_number(t) for t in item["truth"]) and re.search(r"\d", item["prompt"]))


def score_item(item: dict, answer: str) -> tuple[bool, str]:
    """(passed, reason)."""
    fmt = (item.get("format") or {}).get("type")
    stripped = answer.strip()
    if fmt == "yes_no":
        word = normalize(stripped)
        if word not in ("yes", "no"):
            return False, "not a bare yes/no"
        return (word == normalize(item["truth"][0])), "yes/no"
    if fmt == "letter":
        m = LETTER_REPLY.fullmatch(stripped)
        if not m:
            return False, "not a single letter"
        return m.group(1).upper() in {t.upper() for t in item["truth"]}, "letter"
    if fmt == "number":
        value = parse_number(stripped)
        if value is None:
            return False, "not a number only"
        return any(value == parse_number(t) for t in item["truth"]), "number"
    if fmt == "list":
        entries = list_items(stripped)
        if len(entries) != item["format"]["n"]:
            return False, f"{len(entries)} items, asked for {item['format']['n']}"
        if item["truth"] and not all(any(normalize(e) == normalize(t) for t in item["truth"]) for e in entries):
            return False, "an item outside the accepted list"
        return True, "list"
    if is_calculation(item):
        # A calculation: the numbers of the question are in the answer anyway; its result is what counts.
        result = stated_result(stripped)
        if result is None:
            return False, "no stated result"
        hit = any(result == parse_number(t) for t in item["truth"])
        return hit, f"stated result {result:g}"
    for anchor in item.get("false", []):
        if asserts(stripped, anchor):
            return False, f"false anchor {anchor!r}"
    # An accepted answer the prompt itself contains would pass any echo of the question.
    own = [t for t in item["truth"] if not mentions(item["prompt"], t)]
    hit = next((t for t in own if asserts(stripped, t)), None)
    if hit:
        return True, f"matched {hit!r}"
    if any(mentions(stripped, t) for t in own):
        return False, "accepted answer only in a negated clause"
    return False, "no accepted answer"


def reply_form(item: dict, answer: str) -> bool:
    """The reply has the asked form, right or wrong: one letter, a bare yes/no, one number only, exactly
    N items; for a plain item, an answer was asserted (a reply that is not empty and not an echo of
    the prompt; for a calculation, a stated result)."""
    fmt = (item.get("format") or {}).get("type")
    stripped = answer.strip()
    if fmt == "yes_no":
        return normalize(stripped) in ("yes", "no")
    if fmt == "letter":
        return LETTER_REPLY.fullmatch(stripped) is not None
    if fmt == "number":
        return parse_number(stripped) is not None
    if fmt == "list":
        return len(list_items(stripped)) == item["format"]["n"]
    if is_calculation(item):
        return stated_result(stripped) is not None
    said = normalize(stripped)
    return bool(said) and said not in normalize(item["prompt"])


def form_answer(item: dict, answer: str) -> str | None:
    """A format item's in-form reply reduced to what is compared (the letter, yes/no, the number), for
    the answer bias; None for a list or plain item."""
    fmt = (item.get("format") or {}).get("type")
    if fmt == "yes_no":
        return normalize(answer)
    if fmt == "letter":
        return LETTER_REPLY.fullmatch(answer.strip()).group(1).upper()
    if fmt == "number":
        return f"{parse_number(answer):g}"
    return None


def constant_answers(fmt: str, items: list[dict]) -> list[str]:
    """The replies a constant answerer of a format type could give: yes and no; every letter the items
    accept (A-D at least); every number they accept."""
    if fmt == "yes_no":
        return ["yes", "no"]
    if fmt == "letter":
        return sorted({"A", "B", "C", "D"} | {t.strip().upper() for i in items for t in i["truth"]})
    if fmt == "number":
        return sorted({f"{parse_number(t):g}" for i in items for t in i["truth"]})
    return []


def format_report(items: list[dict], answers: list[str], correct: list[bool], forms: list[bool]) -> dict:
    """Per format type: how many items, how many in the form and correct, the best constant answerer
    (what always answering "yes", or always "A", would score on the same items) and the reply's answer
    bias (the share of its most frequent reply). A score a constant answerer matches shows no skill."""
    by_fmt: dict[str, list[int]] = defaultdict(list)
    for k, item in enumerate(items):
        fmt = (item.get("format") or {}).get("type")
        if fmt in ("yes_no", "letter", "number"):
            by_fmt[fmt].append(k)
    out = {}
    for fmt, ks in sorted(by_fmt.items()):
        group = [items[k] for k in ks]
        best = max(
            ((c, sum(score_item(i, c)[0] for i in group)) for c in constant_answers(fmt, group)),
            key=lambda pair: pair[1],
        )
        given = [form_answer(items[k], answers[k]) for k in ks if forms[k]]
        top = max(set(given), key=given.count) if given else None
        passed = sum(correct[k] for k in ks)
        out[fmt] = {
            "total": len(ks),
            "passed": passed,
            "form": sum(forms[k] for k in ks),
            "constant": {"answer": best[0], "passed": best[1]},
            "bias": {"answer": top, "share": given.count(top) / len(ks) if top is not None else 0.0},
            "beats_constant": passed > best[1],
        }
    return out


def summarize(items: list[dict], answers: list[str]) -> dict:
    per_item, by_cat = [], defaultdict(lambda: [0, 0, 0])
    for item, answer in zip(items, answers):
        passed, reason = score_item(item, answer)
        form = reply_form(item, answer)
        per_item.append(
            {
                "id": item["id"],
                "category": item["category"],
                "answer": answer,
                "passed": passed,
                "form": form,
                "reason": reason,
            }
        )
        by_cat[item["category"]][0] += passed
        by_cat[item["category"]][1] += 1
        by_cat[item["category"]][2] += form
    total = sum(p for p, _, _ in by_cat.values())
    return {
        "passed": total,
        "total": len(items),
        "score": total / len(items),
        "form": sum(f for _, _, f in by_cat.values()),
        "categories": {c: {"passed": p, "total": n, "score": p / n, "form": f} for c, (p, n, f) in by_cat.items()},
        "formats": format_report(items, answers, [i["passed"] for i in per_item], [i["form"] for i in per_item]),
        "items": per_item,
    }


def check_fits(model, tokens: int, needed_for: str) -> None:
    """A prompt the model's context cannot hold is refused, never truncated: a cut prompt asks
    something else, and a position past the context is an index error deep inside the model."""
    context = context_length(model.config)
    if context is not None and tokens > context:
        raise UserError(f"{needed_for}: {tokens} tokens, more than the model's context of {context}")


def greedy_answers(
    model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int = 16, template: str | None = None
) -> list[str]:
    """The model's greedy reply to each user prompt, batched (left padding), in the chat template."""
    import torch

    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:  # Llama-3-style: generation pads finished rows; masked, any token does
        tokenizer.pad_token = tokenizer.eos_token
    answers = []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(prompts), batch_size):
            texts = [prompt_text(tokenizer, p, template=template) for p in prompts[i : i + batch_size]]
            batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            longest = int(batch["attention_mask"].sum(1).argmax())  # padding=True: the batch is its width
            check_fits(
                model,
                batch["input_ids"].shape[1] + max_new_tokens,
                f"prompt {prompts[i + longest][:60]!r} in the chat template plus {max_new_tokens} new tokens",
            )
            batch = {k: v.to(model.device) for k, v in batch.items()}
            out = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            answers += [
                tokenizer.decode(o[batch["input_ids"].shape[1] :], skip_special_tokens=True).strip() for o in out
            ]
    return answers


def run_bench(
    model, tokenizer, items: list[dict], max_new_tokens: int, batch_size: int = 16, template: str | None = None
) -> dict:
    """Greedy answers for every item, scored. The prompt is the model's chat template unless `template`."""
    import torch

    answers = greedy_answers(model, tokenizer, [it["prompt"] for it in items], max_new_tokens, batch_size, template)
    with torch.no_grad():
        margins = answer_margins(model, tokenizer, items, batch_size, template)
    summary = summarize(items, answers)
    for row, (logprob, margin) in zip(summary["items"], margins):
        row["logprob"], row["margin"] = logprob, margin
    return summary


def reply_logprobs(model, tokenizer, pairs: list[tuple[str, str]], batch_size: int = 16) -> list[float | None]:
    """For each (prompt text, reply), the mean per-token log-probability of the reply's tokens after the
    prompt, teacher-forced (right padding); None for an empty reply."""
    import torch

    out: list[float | None] = []
    tokenizer.padding_side = "right"
    try:
        with torch.no_grad():
            for i in range(0, len(pairs), batch_size):
                chunk = pairs[i : i + batch_size]
                prompt_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p, _ in chunk]
                reply_ids = [tokenizer(r, add_special_tokens=False)["input_ids"] for _, r in chunk]
                width = max(len(a) + len(b) for a, b in zip(prompt_ids, reply_ids))
                ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for row, (a, b) in enumerate(zip(prompt_ids, reply_ids)):
                    check_fits(model, len(a) + len(b), f"reply {chunk[row][1][:40]!r} teacher-forced after its prompt")
                    ids[row, : len(a) + len(b)] = torch.tensor(a + b)
                    mask[row, : len(a) + len(b)] = 1
                logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits.float()
                logp = torch.log_softmax(logits[:, :-1], dim=-1)
                for row, (a, b) in enumerate(zip(prompt_ids, reply_ids)):
                    if not b:
                        out.append(None)
                        continue
                    targets = torch.tensor(b, device=logp.device)
                    picked = logp[row, len(a) - 1 : len(a) - 1 + len(b)].gather(1, targets[:, None])
                    out.append(float(picked.mean()))
    finally:
        tokenizer.padding_side = "left"
    return out


def answer_frames(item: dict) -> tuple[str | None, list[str]]:
    """The fixed replies an item is teacher-forced on: its first accepted answer and its FALSE anchors,
    each as the whole reply. None for a list item with no accepted answer."""
    truth = item["truth"][0] if item["truth"] else None
    return truth, list(item.get("false", []))


def answer_margins(
    model, tokenizer, items: list[dict], batch_size: int = 16, template: str | None = None
) -> list[tuple[float | None, float | None]]:
    """(logprob, margin) per item, teacher-forced in the same pass as the greedy answers: the mean
    per-token log-probability of the first accepted answer as the whole reply, and that minus the best
    of the FALSE anchors' (an item without anchors: the logprob itself).

    Why it is not fooled by a change of reply style: the replies scored are the item's own fixed
    strings, not the model's; a model that learns to answer in one word, or in a sentence, is scored
    on the same tokens before and after. The margin against the anchors cancels what moves every
    reply's likelihood together (a shift in how likely any short reply is), leaving which answer the
    model prefers."""
    pairs = []  # (item index, 0 for the truth or 1 for an anchor, prompt, reply)
    for k, item in enumerate(items):
        truth, anchors = answer_frames(item)
        if truth is None:
            continue
        prompt = prompt_text(tokenizer, item["prompt"], template=template)
        pairs.append((k, 0, prompt, truth))
        pairs += [(k, 1, prompt, a) for a in anchors]
    scores: dict[tuple[int, int], list[float]] = defaultdict(list)
    logprobs = reply_logprobs(model, tokenizer, [(p, r) for _, _, p, r in pairs], batch_size)
    for (k, which, _, _), logprob in zip(pairs, logprobs):
        scores[(k, which)].append(logprob)
    out = []
    for k in range(len(items)):
        if (k, 0) not in scores:
            out.append((None, None))
            continue
        logprob = scores[(k, 0)][0]
        anchors = scores.get((k, 1))
        out.append((logprob, logprob - max(anchors) if anchors else logprob))
    return out
