"""Stores written before the typed records still load, and write back unchanged: every record of a
`make run` store (tests/fixtures/make_run_store, copied before the records were typed) loads with its
type and gives the same JSON (champion.json, written unsorted, the same bytes), and every card renders
again byte for byte from those records."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from slm import REPO_ROOT
from slm.config import CardSpec
from slm.datasets import Manifest
from slm.eval.scores import Selection
from slm.records import ChampionPointer
from slm.run_record import RunRecord
from slm.store import Store

FIXTURE = REPO_ROOT / "tests/fixtures/make_run_store"
MADE_AT = "/work/main/artifacts/store"  # the store's URI where the fixture was made (cards name it)


def files(pattern: str) -> list[Path]:
    found = sorted(FIXTURE.glob(pattern))
    assert found, f"no {pattern} in {FIXTURE}"
    return found


@pytest.mark.parametrize(
    "pattern, record",
    [
        ("runs/*/*/record.json", RunRecord),
        ("datasets/*/manifest.json", Manifest),
        ("champions/*/latest.json", ChampionPointer),
        ("runs/*/*/sweep/selection.json", Selection),
    ],
)
def test_every_record_loads_and_writes_back_the_same(pattern, record):
    for path in files(pattern):
        raw = json.loads(path.read_text())
        assert record.model_validate(raw).to_json() == raw, path


def test_champion_info_writes_back_the_same_bytes():
    from slm.orchestration.lineage import ChampionInfo

    for path in files("champions/*/v*/champion.json"):
        text = path.read_text()
        assert ChampionInfo.model_validate_json(text).to_text() == text, path


def test_a_misspelt_field_is_refused():
    from pydantic import ValidationError

    raw = json.loads(files("runs/*/*/record.json")[0].read_text())
    with pytest.raises(ValidationError, match="stauts"):
        RunRecord.model_validate({**raw, "stauts": "finished"})


def test_every_card_renders_the_same_bytes_as_before(tmp_path):
    from slm.orchestration import card
    from slm.orchestration.lineage import read_champion

    root = tmp_path / "store"
    shutil.copytree(FIXTURE, root)
    store = Store.open(str(root))
    for readme in files("champions/*/v*/README.md"):
        key = str(readme.parent.relative_to(FIXTURE))
        want = readme.read_text().replace(MADE_AT, store.uri)
        assert card.render(store, read_champion(store, key), CardSpec()) == want, key


def test_a_champion_keeps_the_score_summary_as_before():
    """champion.json holds the scores without per-item answers, keys as promotion always wrote them."""
    from slm.eval.scores import Scores
    from slm.orchestration.lineage import ChampionScores

    for path in files("champions/*/v*/champion.json"):
        stored = json.loads(path.read_text())["scores"]
        with_items = json.loads(json.dumps(stored))
        with_items["mmlu"]["items"] = {subject: [1, 0] for subject in stored["mmlu"]["subjects"]}
        if with_items["bench"]:
            with_items["bench"]["items"] = [
                {"id": "x", "category": "format", "answer": "a", "passed": True, "reason": "matched"}
            ]
        assert ChampionScores.of(Scores.model_validate(with_items)).to_json() == stored, path


def test_a_champion_with_a_held_out_set_keeps_its_summary_and_not_the_drift_replies():
    from slm.eval.scores import Scores
    from slm.orchestration.lineage import ChampionInfo, ChampionScores

    path = files("champions/*/v*/champion.json")[0]
    raw = json.loads(path.read_text())
    scores = json.loads(json.dumps(raw["scores"]))
    item = {"id": "ho-1", "category": "person", "answer": "Dickens", "passed": True, "reason": "matched"}
    scores["heldout"] = {
        "passed": 1, "total": 1, "score": 1.0, "items": [item],
        "categories": {"person": {"passed": 1, "total": 1, "score": 1.0}},
    }  # fmt: skip
    scores["drift"] = {"answers": {"d1": "A reply."}, "references": "abc", "own": True, "logprob": {"d1": -0.5}}
    kept = ChampionScores.of(Scores.model_validate(scores)).to_json()
    assert kept["heldout"]["passed"] == 1 and "items" not in kept["heldout"] and "drift" not in kept
    info = ChampionInfo.model_validate({**raw, "scores": kept})
    assert ChampionInfo.model_validate_json(info.to_text()).scores.heldout.total == 1
