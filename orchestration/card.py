"""Model cards generated from run records: never hand-written.

Two steps. `gather` reads the typed records of a champion's lineage (ChampionInfo, RunRecord, the
Selection, rollback events and experiment verdicts) into one `CardData`; `render` fills the Jinja
template `templates/card.md.jinja` with it, one block per section, and checks that huggingface_hub
parses the metadata back (as `ModelCard.from_template` does, with an environment that keeps the
template's whitespace as written).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import jinja2
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.repocard_data import model_index_to_eval_results

from slm import refs
from slm.config import CardSpec, SelectionPolicy, resolve_path
from slm.engine import optimizer_name
from slm.eval.report import markdown_table, pct
from slm.eval.scores import Scores, Selection
from slm.orchestration.lineage import ChampionInfo, experiments, lineage, refused, rollbacks
from slm.records import RollbackEvent, load_record, redact
from slm.run_record import RunRecord
from slm.store import Store

TEMPLATE = Path(__file__).with_name("templates") / "card.md.jinja"
DOMAIN_TITLES = {"stem": "STEM", "humanities": "Humanities", "social_sciences": "Social sciences", "other": "Other"}
PLOT_CAPTIONS = {
    "history": "The line so far: MMLU and bench score of every champion up to this one",
    "loss": "Training loss of this champion's run",
    "selection": "The checkpoint sweep that chose it",
}
UNRECORDED_COMMIT = (
    "not recorded (the run was not started from a git checkout; the image records its GIT_COMMIT build arg)"
)


@dataclass
class StageView:
    """One stage of the lineage, as its section of the card shows it."""

    index: int
    champion: ChampionInfo
    record: RunRecord

    @property
    def world(self) -> int:
        return (self.record.engine.world_size if self.record.engine else None) or 1

    @property
    def optimizer(self) -> str:
        ds = self.record.deepspeed
        return ds.optimizer or optimizer_name(ds.config, self.record.config.train.optim)

    @property
    def kept_states(self) -> str:
        storage = self.record.storage
        return ", ".join(k.rsplit("/", 1)[-1] for k in storage.resumable_checkpoints) or "none"

    @property
    def resumes(self) -> list:
        return [s for s in self.record.worker_group_starts if s.resume_from]


@dataclass
class CardData:
    name: str
    info: ChampionInfo
    scores: Scores
    chain: list[ChampionInfo]
    stages: list[StageView]
    selection: Selection
    store_uri: str
    license: str
    license_source: str
    metadata: ModelCardData
    rollbacks: list[RollbackEvent] = field(default_factory=list)
    experiments: list = field(default_factory=list)
    refused: list = field(default_factory=list)  # NotPromoted: runs the gate kept out of the line
    spec: CardSpec = field(default_factory=CardSpec)

    @property
    def domain_subjects(self) -> dict[str, int]:
        """How many MMLU subjects each macro domain's score covers."""
        from collections import Counter

        from slm.eval.mmlu import SUBJECT_DOMAINS

        return dict(Counter(SUBJECT_DOMAINS.get(s, "other") for s in self.scores.mmlu.subjects))

    @property
    def weakest_domains(self) -> list[tuple[str, object]]:
        """The two MMLU macro domains the champion scores lowest on (the Limitations section)."""
        return sorted(self.scores.mmlu.domains.items(), key=lambda kv: kv[1].acc)[:2]

    @property
    def weakest_categories(self) -> list[tuple[str, object]]:
        bench = self.scores.bench
        return sorted(bench.categories.items(), key=lambda kv: kv[1].score)[:2] if bench else []

    @property
    def blind_spots(self) -> list:
        """What the gate could not have seen: the detectable drop of its MMLU, bench and held-out tests
        (None: at the disagreement measured, not even a loss of every changed item)."""
        gate = self.selection.gate
        return [t for t in (gate.tests if gate else []) if t.what in ("MMLU", "bench", "heldout")]

    @property
    def citation_key(self) -> str:
        return "".join(c if c.isalnum() else "_" for c in self.name.lower())

    @property
    def year(self) -> str:
        return (self.info.promoted_at or self.record.finished_at or "")[:4] or "n.d."

    @property
    def record(self) -> RunRecord:
        return self.stages[-1].record

    @property
    def hygiene_unchecked(self) -> list[str]:
        return [
            s.champion.stage
            for s in self.stages
            if not s.record.data.hygiene or isinstance(s.record.data.hygiene.eval_sets, str)
        ]

    @property
    def hygiene(self):
        """The first stage's hygiene settings (the card states them once), None when no stage has any."""
        return next((s.record.data.hygiene for s in self.stages if s.record.data.hygiene), None)

    @property
    def policy(self) -> SelectionPolicy:
        return SelectionPolicy.model_validate(self.selection.policy or {})

    @property
    def commit(self) -> str:
        commit = self.record.git_commit
        return f"git `{commit}`" if commit else UNRECORDED_COMMIT


def base_card(spec: str):
    """The card metadata of the model a line grew from, where it can be read offline: a local model
    directory's README.md (launch/convert_gguf.py writes one), or a hub model's card in the HF cache."""
    from huggingface_hub import try_to_load_from_cache

    ref = refs.parse(spec)
    if ref.kind == "hf":
        found = try_to_load_from_cache(ref.repo, "README.md", revision=ref.revision)
        path = Path(found) if isinstance(found, str) else None
    elif ref.kind == "local" and spec:
        path = resolve_path(spec) / "README.md"
    else:
        path = None
    return ModelCard.load(path).data if path and path.is_file() else None


def hub_base(spec: str | None, merged: bool = False) -> dict:
    """base_model (and its relation) when the line grew from a hub model, so the Hub's model tree shows
    it: named by an `hf:` init (`spec`, the first champion's input), or by a local init's own card.
    merged: the first champion is a SLERP with the base itself."""
    ref = refs.parse(spec or "")
    if ref.kind == "hf":
        repo = ref.repo
    else:
        base = base_card(spec) if spec else None
        repo = base.base_model if base else None
    if not repo:
        return {}
    return {"base_model": repo, "base_model_relation": "merge" if merged else "finetune"}


def card_license(spec: str | None, configured: str | None) -> tuple[str, str]:
    """(licence, where it came from): card.license if set, else the base model's (`spec`, the line's
    first input), else apache-2.0 for a line trained from scratch; an unreadable base gives `other`."""
    if configured:
        return configured, "card.license in the pipeline config"
    if not spec:
        return "apache-2.0", "the project's default for weights trained from scratch"
    base = base_card(spec)
    if base and base.license:
        return base.license, f"the base model's card ({spec})"
    return "other", f"unknown: the base model ({spec}) has no readable card; set card.license"


def eval_results(scores: Scores, sweep_note: str) -> list[EvalResult]:
    """The model-index: every benchmark the champion was scored on, as the Hub reads it.

    MMLU scored on a subset says so in its name, so that nothing takes it for full MMLU."""
    mmlu, bench = scores.mmlu, scores.bench
    subset = "subset" in sweep_note
    out = [
        EvalResult(
            task_type="text-generation",
            dataset_type="cais/mmlu",
            dataset_name=f"MMLU (subset: {mmlu.n:,} items, not full MMLU)" if subset else "MMLU",
            dataset_config="all",
            dataset_split="test",
            metric_type="accuracy",
            metric_value=round(mmlu.acc, 4),
            metric_name="accuracy",
        )
    ]
    if bench:
        out.append(
            EvalResult(
                task_type="text-generation",
                dataset_type="truth-list-bench",
                dataset_name=f"TRUTH-list bench ({bench.total} prompts)",
                metric_type="pass_rate",
                metric_value=round(bench.score, 4),
                metric_name="pass rate",
            )
        )
    for task, metrics in sorted(scores.extra.items()):
        for metric, value in sorted(metrics.items()):
            if "stderr" not in metric:
                out.append(
                    EvalResult(
                        task_type="text-generation",
                        dataset_type=task,
                        dataset_name=task,
                        metric_type=metric.split(",")[0],
                        metric_value=round(value, 4),
                        metric_name=metric,
                    )
                )
    return out


def validated(text: str, expected: list[EvalResult]) -> str:
    """Parse the card back with huggingface_hub, as the Hub does, and check the model-index survived."""
    parsed = ModelCard(text).data
    _, results = model_index_to_eval_results(parsed.to_dict()["model-index"])
    if [(r.dataset_type, r.metric_value) for r in results] != [(r.dataset_type, r.metric_value) for r in expected]:
        raise ValueError("model card metadata did not survive huggingface_hub's parser")
    return text


def gather(store: Store, info: ChampionInfo, card: CardSpec) -> CardData:
    """Every record the card shows, typed, from the champion's lineage in the store."""
    chain = lineage(store, info)
    records = [load_record(store, c.run_record, RunRecord) for c in chain]
    scores = info.scores.as_scores()
    start = chain[0].precursor.spec if chain[0].precursor else None
    license_, license_source = card_license(start, card.license)
    metadata = ModelCardData(
        language=card.language,
        license=license_,
        library_name="transformers",
        pipeline_tag="text-generation",
        model_name=f"{info.line}-{info.version}",
        tags=["text-generation", records[-1].model.architecture, "causal-lm", *[c.stage for c in chain]],
        eval_results=eval_results(scores, info.sweep_note),
        **hub_base(start, chain[0].candidate_kind == "merge"),
    )
    return CardData(
        name=f"{info.line}-{info.version}",
        info=info,
        scores=scores,
        chain=chain,
        stages=[StageView(i, c, r) for i, (c, r) in enumerate(zip(chain, records), 1)],
        selection=load_record(store, info.selection, Selection),
        store_uri=redact(store.uri),
        license=license_,
        license_source=license_source,
        metadata=metadata,
        rollbacks=rollbacks(store, info.line),
        experiments=experiments(store, info.line),
        refused=refused(store, info.line),
        spec=card,
    )


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE.parent),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # Markdown, not HTML
    )
    env.filters.update(
        pct=pct,
        pct1=lambda x: f"{x:.1%}",
        commas=lambda x: f"{x:,}",
        commas0=lambda x: f"{x:,.0f}",
        commas1=lambda x: "n/a" if x is None else f"{x:,.1f}",
        g=lambda x: f"{x:g}",
        f4=lambda x: f"{x if x is not None else float('nan'):.4f}",
        domain_title=lambda d: DOMAIN_TITLES.get(d, d),
        cell=lambda text: str(text).replace("|", "\\|"),  # GFM tables split on | even in code
    )
    env.globals.update(selection_table=markdown_table, plot_captions=PLOT_CAPTIONS)
    return env


def render_data(data: CardData) -> str:
    body = _environment().get_template(TEMPLATE.name).render(card=data)
    return validated(str(ModelCard(f"---\n{data.metadata.to_yaml()}\n---\n{body}")), data.metadata.eval_results)


def section(block: str, **values) -> str:
    """One block of the card's template alone (`experiments`, `rollbacks`), from the values it reads."""
    template = _environment().get_template(TEMPLATE.name)
    return "".join(template.blocks[block](template.new_context({"card": SimpleNamespace(**values)})))


def _rollbacks(store: Store, line: str) -> str:
    return section("rollbacks", rollbacks=rollbacks(store, line))


def _experiments(store: Store, line: str) -> str:
    return section("experiments", experiments=experiments(store, line))


def write_out(store: Store, out: Path, text: str, force: bool = False) -> None:
    """A card written where the user asked: never inside the store (a champion's own README.md must
    keep matching its marker), and an existing file only with force."""
    from slm.errors import UserError

    target = out.expanduser().resolve()
    root = getattr(store, "root", None)  # a local store's directory (an S3 store has none here)
    if root is not None and target.is_relative_to(root):
        raise UserError(f"--out {out}: inside the store ({store.uri}); write the card outside it")
    if target.is_dir():
        raise UserError(f"--out {out}: is a directory; name a file")
    if target.exists() and not force:
        raise UserError(f"--out {out}: exists; give --force to replace it")
    target.write_text(text)


def render(store: Store, info: ChampionInfo, card: CardSpec) -> str:
    return render_data(gather(store, info, card))
