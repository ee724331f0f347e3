"""The typed records that cross sweep → selection → promotion → card.

Each has a JSON form (`to_json`) that is exactly the layout the store has always held, so files
written by earlier runs load with `model_validate`, and a misspelt field is an error at the
boundary instead of a KeyError three modules later.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from slm.records import ChampionPointer, Record
from slm.refs import ModelRef


class SubjectScore(Record):
    acc: float
    se: float | None = None
    n: int
    domain: str


class DomainScore(Record):
    acc: float
    se: float | None = None
    n: int


class MMLUScores(Record):
    """Overall, per-domain and per-subject accuracy, and per-item correctness (1/0 by document order)."""

    acc: float
    se: float
    n: int
    domains: dict[str, DomainScore]
    subjects: dict[str, SubjectScore]
    items: dict[str, list[int]] = {}  # dropped where only the summary is kept (champion.json)
    # per item, the probability of the correct choice normalised over the four (None: scored before)
    probs: dict[str, list[float]] | None = None
    dev: DomainScore | None = Field(None, exclude_if=lambda v: v is None)  # the dev split, 0-shot (sweep.mmlu_dev)


class CategoryScore(Record):
    passed: int  # correct: the headline
    total: int
    score: float
    form: int | None = None  # replies in the asked form, right or wrong (None: scored before it was kept)


class BenchItem(Record):
    id: str
    category: str
    answer: str
    passed: bool
    reason: str
    form: bool | None = None
    # teacher-forced, per token: the first accepted answer's log-probability, and it minus the best FALSE
    # anchor's (eval.bench.answer_margins); None for items scored before these were kept
    logprob: float | None = None
    margin: float | None = None


class ConstantAnswer(Record):
    answer: str
    passed: int


class AnswerBias(Record):
    answer: str | None = None  # None: no reply was in the form
    share: float


class FormatScore(Record):
    """One format type (yes_no, letter, number) of a bench: correct and in form, beside the best
    constant answerer on the same items and the reply's answer bias."""

    total: int
    passed: int
    form: int
    constant: ConstantAnswer
    bias: AnswerBias
    beats_constant: bool


class BenchScores(Record):
    passed: int
    total: int
    score: float
    categories: dict[str, CategoryScore]
    items: list[BenchItem] = []
    form: int | None = None
    formats: dict[str, FormatScore] | None = None  # None: scored before format reports were kept


class DriftScores(Record):
    """The drift set (eval.drift): the model's own greedy replies, and its per-token log-probability of
    the references (`own`: its own replies, as the reference model is scored; else the reference's)."""

    answers: dict[str, str]
    references: str  # digest of the reference replies
    own: bool
    logprob: dict[str, float]


class Scores(Record):
    mmlu: MMLUScores
    bench: BenchScores | None = None
    # the held-out bench (sweep.heldout) and the drift set (sweep.drift); None: not configured
    heldout: BenchScores | None = Field(None, exclude_if=lambda v: v is None)
    drift: DriftScores | None = Field(None, exclude_if=lambda v: v is None)
    extra: dict[str, dict[str, float]] = {}  # other lm-eval tasks: task → metric → value
    scored_at: str | None = None
    device: str | None = None
    seconds: float | None = None
    threads: int | None = Field(None, exclude_if=lambda v: v is None)  # CPU threads it was scored on
    node: str | None = Field(None, exclude_if=lambda v: v is None)  # the Ray node's address that scored it

    def summary(self) -> Scores:
        """The scores without per-item answers (what a champion's provenance keeps)."""
        return self.model_copy(
            update={
                "mmlu": self.mmlu.model_copy(update={"items": {}, "probs": None}),
                "bench": self.bench.model_copy(update={"items": []}) if self.bench else None,
                "heldout": self.heldout.model_copy(update={"items": []}) if self.heldout else None,
                "drift": None,
            }
        )


class Candidate(Record):
    """A model the sweep scores: a checkpoint, a merge, the stage's input model, an incumbent champion,
    or any model the evaluator was given. `key` is a tree of the sweep's store; `ref` any resolved
    model reference (slm.modeling.resolve_ref)."""

    name: str
    kind: str  # checkpoint | merge | precursor (the stage's input model) | incumbent | reference | model
    key: str | None = None
    # the run a checkpoint belongs to, when it is another run of the stage swept with this one (sweep.runs)
    run: str | None = Field(None, exclude_if=lambda v: v is None)
    ref: ModelRef | None = None
    step: int | None = None
    spec: str | None = None  # the reference the user gave (evaluator)
    champion: ChampionPointer | None = None  # when the candidate is a champion
    merge: dict[str, Any] | None = None  # method, t, the merged pair
    manual: dict[str, Any] | None = None  # a promotion that overrules the selection: what and why
    weights_digest: str | None = None
    settings_digest: str | None = None
    scores: Scores | None = None

    @property
    def scored(self) -> Scores:
        if self.scores is None:
            raise ValueError(f"candidate {self.name} has not been scored")
        return self.scores


class SelectionRow(Record):
    """One candidate's line in a selection report: its scores and the verdict on it."""

    name: str
    kind: str | None = None
    step: int | None = None
    mmlu: float
    mmlu_se: float
    mmlu_dev: float | None = Field(None, exclude_if=lambda v: v is None)  # the dev split, 0-shot (sweep.mmlu_dev)
    domains: dict[str, float]
    bench: float | None = None
    bench_passed: int | None = None
    bench_total: int | None = None
    bench_form: int | None = Field(None, exclude_if=lambda v: v is None)  # replies in the asked form
    status: str  # champion | not selected | rejected | baseline | reference | ceiling | scored
    run: str | None = Field(None, exclude_if=lambda v: v is None)  # another run swept with this one (sweep.runs)
    reason: str
    regressions: list[dict[str, Any]] | None = None


class PairedTest(Record):
    """One paired test of two models on the same items (exact McNemar on per-item correctness)."""

    what: str  # MMLU, bench, bench:<category>
    n: int
    candidate: int  # items the first model (the candidate) got right
    input: int  # items the second model (the input model, or the runner-up) got right
    delta: float  # (candidate - input) / n
    p: float
    worse: bool | None = None  # set by the gate: delta < 0 and p < alpha
    # (fields added later are left out of the file while unset, so older files write back as they were)
    discordant: int | None = Field(None, exclude_if=lambda v: v is None)  # items on which the two models disagree
    # the smallest drop seen at alpha, power 0.8, at this discordance (eval/power.py)
    detectable: float | None = Field(None, exclude_if=lambda v: v is None)


class ContinuousTest(Record):
    """A paired test of a continuous per-item signal (Wilcoxon signed-rank on candidate − input): worse
    only when the mean shift is below −floor and p < alpha, so a trivial but significant shift (a bf16
    round trip) does not refuse a model."""

    what: str  # e.g. bench-margin, bench-margin:<category>
    n: int
    effect: float  # mean of candidate − input (nats per token)
    low: float  # a 95% interval of that mean (t interval)
    high: float
    p: float
    floor: float
    worse: bool

    @property
    def unit(self) -> str:
        return "probability" if self.what.startswith("MMLU") else "nats/token"


class GateVerdict(Record):
    """The champion against the stage's input model (eval.selection.gate): promoted only if passed."""

    passed: bool
    candidate: str
    input_model: str
    alpha: float
    reason: str
    tests: list[PairedTest]
    continuous: list[ContinuousTest] = Field([], exclude_if=lambda v: not v)

    @property
    def summary(self) -> str:
        """One line: passed or not, and each paired test (what, candidate vs input, p)."""
        tests = ", ".join(f"{t.what} {t.candidate}/{t.n} vs {t.input}/{t.n} (p = {t.p:.2g})" for t in self.tests)
        tests += "".join(f", {t.what} {t.effect:+.3f} {t.unit} (p = {t.p:.2g})" for t in self.continuous)
        return f"{self.reason if not self.passed else 'passed'} [{tests}]"


class NoiseTest(Record):
    """The champion's lead over the runner-up on MMLU, paired per item."""

    versus: str
    delta: float
    se: float
    mcnemar_p: float
    within_noise: bool
    alpha: float
    n: int


class Selection(Record):
    """A selection report: the champion (None when models were only ranked), the policy, the noise test."""

    champion: str | None
    policy: dict[str, Any] | None = None  # the SelectionPolicy it applied (ranked-only reports have none)
    noise: NoiseTest | None = None
    candidates: list[SelectionRow]
    experiment: dict[str, Any] | None = None
    gate: GateVerdict | None = None

    @property
    def promotable(self) -> bool:
        return self.champion is not None and (self.gate is None or self.gate.passed)

    def row(self, name: str) -> SelectionRow:
        return next(r for r in self.candidates if r.name == name)

    def to_json(self) -> dict:  # keep `champion: null` and `noise: null` in the file, as before
        return self.model_dump(mode="json", exclude_none=False)
