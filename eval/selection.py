"""Champion selection: best by MMLU, guarded against wins that regress on named domains or the bench,
then gated against the stage's input model.

Walk the candidates from the best MMLU score down. The leader is compared with the next one (the
runner-up) and rejected, moving the walk on, when
  - its gain is below `margin` and it regresses on more than `max_guard_regressions` guarded
    domains (a domain regresses when the leader is lower there by more than
    `regression_tolerance_se` standard errors of the paired difference), or
  - (`bench_guard`) it passes significantly fewer bench prompts than the runner-up, overall or in a
    category (exact McNemar on the per-prompt passes, p < alpha), and its MMLU lead is not itself
    significant (McNemar on the per-item answers): a significant loss is traded only for a
    significant gain.
The winner's lead over the runner-up is tested the same way, and the report says when it is noise.

The gate (`gate`) then compares the winner with the stage's input model: it is promoted only when it
is not significantly worse on MMLU, on the bench, or on any bench category (paired exact McNemar,
p < gate.alpha and fewer correct). Small models sit near chance on MMLU, where the bench is the
signal that moves; both are tested.
"""

from __future__ import annotations

import math

from slm.config import GateSpec, SelectionPolicy
from slm.eval.mmlu import DOMAINS, SUBJECT_DOMAINS
from slm.eval.scores import (
    BenchScores,
    Candidate,
    ContinuousTest,
    GateVerdict,
    MMLUScores,
    NoiseTest,
    PairedTest,
    Scores,
    Selection,
    SelectionRow,
)


def domain_subjects(domain: str, scored: list[str]) -> list[str]:
    if domain in DOMAINS:
        return [s for s in scored if SUBJECT_DOMAINS[s] == domain]
    return [domain] if domain in scored else []


def paired_items(a: MMLUScores, b: MMLUScores, subjects: list[str]) -> tuple[list[int], list[int]]:
    xs, ys = [], []
    for s in subjects:
        ia, ib = a.items.get(s, []), b.items.get(s, [])
        if len(ia) != len(ib):
            raise ValueError(f"candidates were scored on different items of {s}")
        xs += ia
        ys += ib
    return xs, ys


def paired_difference(xs: list[int], ys: list[int]) -> tuple[float, float]:
    """Mean of x - y and its standard error (paired)."""
    n = len(xs)
    if n == 0:
        return 0.0, 0.0
    diffs = [x - y for x, y in zip(xs, ys)]
    mean = sum(diffs) / n
    var = sum((d - mean) ** 2 for d in diffs) / max(n - 1, 1)
    return mean, math.sqrt(var / n)


def mcnemar_p(xs: list[int], ys: list[int]) -> float:
    """Exact two-sided McNemar p-value on discordant pairs."""
    from scipy.stats import binomtest

    b = sum(1 for x, y in zip(xs, ys) if x and not y)
    c = sum(1 for x, y in zip(xs, ys) if y and not x)
    return 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5).pvalue)


def paired_bench(a: BenchScores, b: BenchScores, category: str | None = None) -> tuple[list[int], list[int]]:
    """Per-prompt passes of two bench runs on the same prompts (by id), optionally one category."""
    mine = {it.id: it for it in a.items if category is None or it.category == category}
    theirs = {it.id: it for it in b.items if category is None or it.category == category}
    if set(mine) != set(theirs):
        raise ValueError("bench runs were scored on different prompts")
    ids = sorted(mine)
    return [int(mine[i].passed) for i in ids], [int(theirs[i].passed) for i in ids]


def paired_tests(a: Scores, b: Scores, categories: bool, heldout: bool = False) -> list[PairedTest]:
    """a against b: MMLU per item, the bench per prompt (and per category); with `heldout`, the held-out
    bench too (the gate tests it; selection never looks at it, so it stays unseen by any choice)."""
    tests = []

    def add(what: str, xs: list[int], ys: list[int]) -> None:
        n = len(xs)
        if n:
            tests.append(
                PairedTest(
                    what=what,
                    n=n,
                    candidate=sum(xs),
                    input=sum(ys),
                    delta=(sum(xs) - sum(ys)) / n,
                    p=mcnemar_p(xs, ys),
                    discordant=sum(x != y for x, y in zip(xs, ys)),
                )
            )

    add("MMLU", *paired_items(a.mmlu, b.mmlu, list(a.mmlu.subjects)))
    for label, mine, theirs in benches(a, b, heldout):
        add(label, *paired_bench(mine, theirs))
        if categories:
            for category in sorted(mine.categories):
                add(f"{label}:{category}", *paired_bench(mine, theirs, category))
    return tests


def benches(a: Scores, b: Scores, heldout: bool) -> list[tuple[str, BenchScores, BenchScores]]:
    """The benches both were scored on item by item: the bench, and (heldout) the held-out bench."""
    pairs = [("bench", a.bench, b.bench)] + ([("heldout", a.heldout, b.heldout)] if heldout else [])
    return [(label, x, y) for label, x, y in pairs if x and y and x.items and y.items]


def bench_regressions(leader: Scores, runner: Scores, alpha: float) -> list[dict]:
    """The bench (overall, per category) where the leader passes significantly fewer prompts."""
    return [
        {"domain": t.what, "delta": t.delta, "p": t.p, "n": t.n}
        for t in paired_tests(leader, runner, categories=True)
        if t.what.startswith("bench") and t.delta < 0 and t.p < alpha
    ]


def gate(candidate: Candidate, input_model: Candidate, spec: GateSpec) -> GateVerdict:
    """Is the candidate significantly worse than the stage's input model anywhere it is tested?"""
    from slm.eval.power import detectable_drop

    tests = paired_tests(candidate.scored, input_model.scored, spec.bench_categories, heldout=True)
    for t in tests:
        t.worse = t.delta < 0 and t.p < spec.alpha
        # what this test could have seen: at the disagreement measured here (none: the best case)
        t.detectable = detectable_drop(t.n, spec.alpha, t.discordant / t.n if t.discordant else None)
    # always measured and reported; they refuse a model only when selection.gate.continuous is on
    continuous = mmlu_continuous(candidate.scored, input_model.scored, spec.alpha, spec.continuous_floor_mmlu)
    continuous += continuous_tests(
        candidate.scored, input_model.scored, spec.alpha, spec.continuous_floor, spec.bench_categories
    )
    continuous += drift_test(candidate.scored, input_model.scored, spec.alpha, spec.drift_floor)
    worse = [t for t in tests if t.worse]
    worse_c = [t for t in continuous if t.worse] if spec.continuous else []
    if worse or worse_c:
        reason = "not promoted: regresses vs its input model — " + "; ".join(
            [f"{t.what} {t.candidate}/{t.n} vs {t.input}/{t.n} (p = {t.p:.3g})" for t in worse]
            + [f"{t.what} {t.effect:+.3f} {t.unit} beyond the floor {t.floor:g} (p = {t.p:.3g})" for t in worse_c]
        )
    else:
        counted = len(tests) + (len(continuous) if spec.continuous else 0)
        reason = f"not significantly worse than its input model on any of {counted} paired tests (α = {spec.alpha})"
        if continuous and not spec.continuous:
            reason += "; the continuous tests are reported, not gating (selection.gate.continuous: false)"
    return GateVerdict(
        passed=not (worse or worse_c),
        candidate=candidate.name,
        input_model=input_model.name,
        alpha=spec.alpha,
        reason=reason,
        tests=tests,
        continuous=continuous,
    )


def paired_margins(a: BenchScores, b: BenchScores, category: str | None = None) -> tuple[list[float], list[float]]:
    """Per-prompt answer margins of two bench runs, on the prompts both have one for."""
    mine = {it.id: it.margin for it in a.items if it.margin is not None and category in (None, it.category)}
    theirs = {it.id: it.margin for it in b.items if it.margin is not None and category in (None, it.category)}
    ids = sorted(set(mine) & set(theirs))
    return [mine[i] for i in ids], [theirs[i] for i in ids]


def paired_shift(what: str, xs: list[float], ys: list[float], alpha: float, floor: float) -> ContinuousTest:
    """Wilcoxon signed-rank on the per-item differences, the mean shift with a 95% t interval."""
    import numpy as np
    from scipy.stats import t as student_t
    from scipy.stats import wilcoxon

    d = np.asarray(xs) - np.asarray(ys)
    mean = float(d.mean())
    half = float(student_t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))) if d.std() > 0 else 0.0
    p = 1.0 if not np.any(d) else float(wilcoxon(d).pvalue)
    return ContinuousTest(
        what=what, n=len(d), effect=mean, low=mean - half, high=mean + half, p=p, floor=floor,
        worse=mean < -floor and p < alpha,
    )  # fmt: skip


def mmlu_continuous(a: Scores, b: Scores, alpha: float, floor: float) -> list[ContinuousTest]:
    """a against b on MMLU's probability of the correct choice, item by item."""
    if not (a.mmlu.probs and b.mmlu.probs):
        return []
    xs, ys = [], []
    for subject in sorted(set(a.mmlu.probs) & set(b.mmlu.probs)):
        if len(a.mmlu.probs[subject]) != len(b.mmlu.probs[subject]):
            raise ValueError(f"MMLU {subject}: the two models were scored on different items")
        xs += a.mmlu.probs[subject]
        ys += b.mmlu.probs[subject]
    return [paired_shift("MMLU-p(correct)", xs, ys, alpha, floor)] if len(xs) >= 2 else []


def continuous_tests(a: Scores, b: Scores, alpha: float, floor: float, categories: bool) -> list[ContinuousTest]:
    """a against b on the answer margins of the bench and the held-out bench: overall and (categories)
    per category."""
    out = []
    for label, mine, theirs in benches(a, b, heldout=True):
        groups = [(f"{label}-margin", None)]
        if categories:
            groups += [(f"{label}-margin:{c}", c) for c in sorted(mine.categories)]
        for what, category in groups:
            xs, ys = paired_margins(mine, theirs, category)
            if len(xs) >= 2:
                out.append(paired_shift(what, xs, ys, alpha, floor))
    return out


def drift_test(a: Scores, b: Scores, alpha: float, floor: float) -> list[ContinuousTest]:
    """a's per-token log-likelihood of b's own drift replies against b's, prompt by prompt (none when the
    two were not scored on the same replies of b's: no drift set, or another reference)."""
    if not (a.drift and b.drift and b.drift.own and a.drift.references == b.drift.references):
        return []
    ids = sorted(set(a.drift.logprob) & set(b.drift.logprob))
    xs, ys = [a.drift.logprob[i] for i in ids], [b.drift.logprob[i] for i in ids]
    return [paired_shift("drift-loglik", xs, ys, alpha, floor)] if len(ids) >= 2 else []


def gate_record(v: GateVerdict) -> dict:
    """A verdict as `gate.json` holds it (the evaluator's --baseline and the stage gate alike)."""
    return {
        "model": v.candidate,
        "passed": v.passed,
        "tests": [
            {
                "name": t.what,
                "kind": "binary",  # exact McNemar on per-item correctness
                "n": t.n,
                "effect": t.delta,
                "p": t.p,
                "passed": not t.worse,
                "detectable": t.detectable,
            }
            for t in v.tests
        ]
        + [
            {
                "name": t.what,
                "kind": "continuous",
                "n": t.n,
                "effect": t.effect,
                "interval": [t.low, t.high],
                "p": t.p,
                "floor": t.floor,
                "unit": t.unit,
                "passed": not t.worse,
            }
            for t in v.continuous
        ],
    }


def guard_regressions(leader: Scores, runner: Scores, policy: SelectionPolicy) -> list[dict]:
    scored = list(leader.mmlu.subjects)
    out = []
    for domain in policy.guarded_domains:
        subjects = domain_subjects(domain, scored)
        if not subjects:
            continue
        xs, ys = paired_items(leader.mmlu, runner.mmlu, subjects)
        diff, se = paired_difference(xs, ys)
        if -diff > policy.regression_tolerance_se * se and diff < 0:
            out.append({"domain": domain, "delta": diff, "se": se, "n": len(xs)})
    return out


def rank_key(cand: Candidate):
    """Best MMLU first; ties go to the better bench score, then to a plain checkpoint over a merge,
    then to the later checkpoint (the end of the schedule the run was designed for)."""
    s = cand.scored
    bench = s.bench.score if s.bench else 0.0
    return (-s.mmlu.acc, -bench, cand.kind != "checkpoint", -(cand.step or 0), cand.name)


def rejected(reason: str, regressions: list[dict]) -> dict:
    """A leader's verdict when a guard turns it down (the walk moves on to the next candidate)."""
    return {"status": "rejected", "reason": reason, "regressions": regressions}


def select(candidates: list[Candidate | dict], policy: SelectionPolicy) -> Selection:
    """Scored candidates (typed, or their JSON form). Returns the selection report."""
    if not candidates:
        raise ValueError("no candidates to select from")
    ranked = sorted((Candidate.model_validate(c) if isinstance(c, dict) else c for c in candidates), key=rank_key)
    verdicts = {c.name: {"status": "not selected", "reason": ""} for c in ranked}
    remaining = list(ranked)
    champion, runner = None, None
    while remaining:
        leader = remaining[0]
        if len(remaining) == 1:
            champion = leader
            verdicts[leader.name] = {"status": "champion", "reason": "the only candidate left"}
            break
        runner = remaining[1]
        plain = next((c for c in remaining if c.kind == "checkpoint"), None)
        if leader.kind == "merge" and plain is not None:
            # A merge or average is a cheap candidate beside the checkpoints it was made of: it wins only
            # by more than noise over the best of them, else it stays on record as a backup.
            lead = leader.scored.mmlu.acc - plain.scored.mmlu.acc
            lead_p = mcnemar_p(*paired_items(leader.scored.mmlu, plain.scored.mmlu, list(leader.scored.mmlu.subjects)))
            if lead <= 0 or lead_p >= policy.alpha:
                verdicts[remaining.pop(0).name] = {
                    "status": "backup",
                    "reason": f"a merge, {lead:+.2%} MMLU over the best plain checkpoint {plain.name}: not beyond "
                    f"noise (McNemar p = {lead_p:.2f}), so the checkpoint goes first; kept as a backup",
                }
                continue
        gain = leader.scored.mmlu.acc - runner.scored.mmlu.acc
        regressions = guard_regressions(leader.scored, runner.scored, policy)
        bench_lost = bench_regressions(leader.scored, runner.scored, policy.alpha) if policy.bench_guard else []
        if bench_lost:
            lead_p = mcnemar_p(*paired_items(leader.scored.mmlu, runner.scored.mmlu, list(leader.scored.mmlu.subjects)))
            if gain <= 0 or lead_p >= policy.alpha:
                names = ", ".join(f"{r['domain']} {r['delta']:+.1%} (p = {r['p']:.3g})" for r in bench_lost)
                verdicts[remaining.pop(0).name] = rejected(
                    f"passes significantly fewer bench prompts than {runner.name} ({names}) while its "
                    f"MMLU lead {gain:+.2%} is not significant (p = {lead_p:.2f})",
                    bench_lost,
                )
                continue
            regressions = regressions + bench_lost
        if gain < policy.margin and len(regressions) > policy.max_guard_regressions:
            names = ", ".join(f"{r['domain']} {r['delta']:+.1%}" for r in regressions)
            verdicts[remaining.pop(0).name] = rejected(
                f"gain {gain:+.2%} over {runner.name} is below the {policy.margin:.2%} margin "
                f"while it regresses on {len(regressions)} guarded domain(s): {names}",
                regressions,
            )
            continue
        champion = leader
        why = f"best MMLU, {gain:+.2%} over {runner.name}"
        if regressions:
            why += f" (regresses on {', '.join(r['domain'] for r in regressions)}, allowed by the margin/guard)"
        verdicts[leader.name] = {"status": "champion", "reason": why, "regressions": regressions}
        break
    for cand in ranked:
        v = verdicts[cand.name]
        if v["status"] == "not selected":
            delta = cand.scored.mmlu.acc - champion.scored.mmlu.acc
            v["reason"] = f"{delta:+.2%} MMLU vs the champion"
    noise = None
    if runner is not None and runner.name != champion.name:
        subjects = list(champion.scored.mmlu.subjects)
        xs, ys = paired_items(champion.scored.mmlu, runner.scored.mmlu, subjects)
        diff, se = paired_difference(xs, ys)
        p = mcnemar_p(xs, ys)
        noise = NoiseTest(
            versus=runner.name,
            delta=diff,
            se=se,
            mcnemar_p=p,
            within_noise=p >= policy.alpha,
            alpha=policy.alpha,
            n=len(xs),
        )
        if noise.within_noise:
            verdicts[champion.name]["reason"] += (
                f"; within noise (McNemar p = {p:.2f} ≥ {policy.alpha}), the lead is not statistically established"
            )
    rows = [report_row(cand, **verdicts[cand.name]) for cand in ranked]
    return Selection(champion=champion.name, policy=policy.model_dump(), noise=noise, candidates=rows)


def report_row(cand: Candidate, status: str, reason: str, regressions: list[dict] | None = None) -> SelectionRow:
    """One candidate's line in the selection report."""
    s = cand.scored
    return SelectionRow(
        name=cand.name,
        kind=cand.kind,
        step=cand.step,
        mmlu=s.mmlu.acc,
        mmlu_se=s.mmlu.se,
        mmlu_dev=s.mmlu.dev.acc if s.mmlu.dev else None,
        domains={d: v.acc for d, v in s.mmlu.domains.items()},
        bench=s.bench.score if s.bench else None,
        bench_passed=s.bench.passed if s.bench else None,
        bench_total=s.bench.total if s.bench else None,
        bench_form=s.bench.form if s.bench else None,
        status=status,
        reason=reason,
        regressions=regressions,
        run=cand.run,
    )
