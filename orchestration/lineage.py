"""A line's champions as typed records: `champion.json` (ChampionInfo) and the chain of precursors.

Promotion writes a ChampionInfo into every champion directory; the card, the history chart and the
promotion rules read them back through this module, never as loose dicts.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ConfigDict, Field

from slm import layout
from slm.eval.scores import BenchScores, MMLUScores, Scores
from slm.records import RollbackEvent, Stored, load_record
from slm.run_record import ExperimentVerdict
from slm.store import Store


class Precursor(Stored):
    """The model a champion's stage started from: a champion pointer of the line (line, version, key,
    stage), or another tree of the store or outside it (key and/or spec)."""

    line: str | None = None
    version: str | None = None
    key: str | None = None
    stage: str | None = None
    run_id: str | None = None
    updated_at: str | None = None
    rollback: RollbackEvent | None = None  # the pointer the stage started from had been rolled back to
    spec: str | None = None

    @property
    def label(self) -> str | None:
        return f"{self.line}@{self.version}" if self.line and self.version else None


class ChampionScores(Stored):
    """A champion's scores as champion.json holds them: the summary (no per-item answers), bench first."""

    bench: BenchScores | None
    mmlu: MMLUScores
    heldout: BenchScores | None = Field(None, exclude_if=lambda v: v is None)  # sweep.heldout, when set
    extra: dict[str, dict[str, float]] = {}
    scored_at: str | None = None
    device: str | None = None
    seconds: float | None = None

    @classmethod
    def of(cls, scores: Scores) -> ChampionScores:
        """A candidate's scores as champion.json keeps them: per-item answers stay in the sweep."""
        summary = scores.model_dump(
            mode="json",
            exclude_none=True,
            # where it was scored (threads, node) stays in the sweep's candidate file too
            exclude={
                "mmlu": {"items", "probs"},
                "bench": {"items"},
                "heldout": {"items"},
                "drift": True,
                "threads": True,
                "node": True,
            },
        )
        return cls.model_validate({"bench": None, **summary})

    def as_scores(self) -> Scores:
        return Scores.model_validate(self.model_dump())


class ManualPromotion(Stored):
    overrules: str
    reason: str


class ChampionInfo(Stored):
    """`champions/<line>/<version>/champion.json`. Fields in the order promotion writes them (the file
    is written unsorted, so reading and writing one back gives the same bytes)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    stage: str
    run_id: str
    candidate: str
    candidate_kind: str
    run_record: str
    selection: str
    precursor: Precursor | None
    scores: ChampionScores
    sweep_note: str
    merge: dict[str, Any] | None = None
    manual: ManualPromotion | None = None
    experiment: dict[str, Any] | None = None
    line: str | None = None
    version: str | None = None
    key: str | None = None
    source_key: str | None = None
    weights_digest: str | None = None
    promoted_at: str | None = None
    plots: dict[str, str] | None = None
    custom_code: dict[str, Any] | None = None  # config.json's auto_map: code the weights name, never run

    @property
    def name(self) -> str:
        return f"{self.line}@{self.version}"

    @property
    def run(self) -> str:
        """The run's key (runs/<stage>/<run_id>)."""
        return self.run_record.rsplit("/", 1)[0]

    def to_text(self) -> str:
        return json.dumps(self.to_json(), indent=2, default=str) + "\n"


def read_champion(store: Store, champion_key: str) -> ChampionInfo:
    key = layout.champion_info(champion_key)
    return load_record(store, key, ChampionInfo)


def champions(store: Store, line: str) -> list[ChampionInfo]:
    """Every complete champion of a line, oldest first."""
    return [read_champion(store, layout.champion_dir(line, v)) for _, v in layout.versions(store, line)]


def lineage(store: Store, info: ChampionInfo) -> list[ChampionInfo]:
    """Champion infos from the first stage to this one (an init from outside the line ends the chain)."""
    chain = [info]
    while chain[0].precursor and chain[0].precursor.key:
        key = chain[0].precursor.key
        if not store.exists(layout.champion_info(key)):
            break
        chain.insert(0, read_champion(store, key))
    return chain


def experiments(store: Store, line: str) -> list[ExperimentVerdict]:
    return [load_record(store, k, ExperimentVerdict) for k in layout.experiment_verdicts(store, line)]


def refused(store: Store, line: str) -> list:
    """The newest run of each stage that the gate kept out of the line (`gates/<line>/<stage>.json`)."""
    from slm.run_record import NotPromoted

    keys = [f"{layout.gates_dir(line)}/{name}" for name in store.children(layout.gates_dir(line))]
    return [load_record(store, k, NotPromoted) for k in sorted(keys) if k.endswith(".json")]


def rollbacks(store: Store, line: str) -> list[RollbackEvent]:
    """The line's deliberate moves of `latest` back, oldest first."""
    return [load_record(store, k, RollbackEvent) for k in layout.rollback_events(store, line)]
