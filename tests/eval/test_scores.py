"""The typed records load what the store already holds (files written before they existed, copied
from a `make run` store, trimmed), write the same layout back, and refuse a misspelt field."""

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from slm.config import SelectionPolicy
from slm.eval.report import markdown_table
from slm.eval.scores import Candidate, Scores, Selection
from slm.eval.selection import select
from slm.records import ChampionPointer

DATA = Path(__file__).parent / "data"


def stored(name: str) -> dict:
    return json.loads((DATA / name).read_text())


def test_a_stored_candidate_loads_and_writes_back_the_same_layout():
    raw = stored("candidate-as-stored.json")
    cand = Candidate.model_validate(raw)
    assert cand.scored.mmlu.items["astronomy"] == [0, 0, 0] and cand.scored.bench.items[0].id == "arit-01"
    assert cand.scored.mmlu.domains["stem"].n == 40 and cand.step == 30
    assert cand.to_json() == raw


def test_a_stored_selection_loads_renders_and_writes_back():
    raw = stored("selection-as-stored.json")
    selection = Selection.model_validate(raw)
    assert selection.row(selection.champion).status == "champion"
    assert selection.to_json() == {
        **raw,
        "experiment": None,
        "gate": None,
        "candidates": [{"regressions": None, **row} for row in raw["candidates"]],
    }
    assert "| **slerp-t0.1** | merge |" in markdown_table(selection)


def test_a_misspelt_field_is_an_error_at_the_boundary():
    raw = stored("candidate-as-stored.json")
    with pytest.raises(ValidationError, match="weight_digest"):
        Candidate.model_validate({**raw, "weight_digest": raw.pop("weights_digest")})
    with pytest.raises(ValidationError, match="mmlu"):
        Scores.model_validate({"mmlu_scores": raw["scores"]["mmlu"]})
    with pytest.raises(ValidationError, match="versions"):
        ChampionPointer.model_validate({"line": "l", "versions": "v1-sft", "key": "champions/l/v1-sft"})


def test_selection_takes_the_stored_form_and_the_typed_form_alike():
    raw = stored("candidate-as-stored.json")
    other = {**raw, "name": "checkpoint-60", "step": 60}
    from_json = select([raw, other], SelectionPolicy())
    typed = select([Candidate.model_validate(raw), Candidate.model_validate(other)], SelectionPolicy())
    assert from_json == typed and typed.champion == "checkpoint-60"  # a tie goes to the later step
