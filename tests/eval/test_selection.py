"""Champion selection on constructed per-item answers: each policy branch, with its reason."""

import random

from slm.config import SelectionPolicy
from slm.eval.mmlu import SUBJECT_DOMAINS
from slm.eval.selection import mcnemar_p, paired_difference, select

SUBJECTS = ["astronomy", "college_mathematics", "philosophy", "world_religions", "marketing", "sociology"]


def mmlu_scores(items: dict[str, list[int]]) -> dict:
    subjects = {
        s: {"acc": sum(v) / len(v), "se": 0.0, "n": len(v), "domain": SUBJECT_DOMAINS[s]} for s, v in items.items()
    }
    domains = {}
    for d in {SUBJECT_DOMAINS[s] for s in items}:
        vals = [x for s, v in items.items() if SUBJECT_DOMAINS[s] == d for x in v]
        domains[d] = {"acc": sum(vals) / len(vals), "se": 0.0, "n": len(vals)}
    everything = [x for v in items.values() for x in v]
    return {
        "acc": sum(everything) / len(everything),
        "se": 0.02,
        "n": len(everything),
        "domains": domains,
        "subjects": subjects,
        "items": items,
    }


def candidate(name, items, kind="checkpoint", step=None, bench=0.5):
    return {
        "name": name,
        "kind": kind,
        "step": step,
        "scores": {"mmlu": mmlu_scores(items), "bench": {"score": bench, "passed": 0, "total": 106, "categories": {}}},
    }


def answers(rate: float, n: int = 100, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    right = round(rate * n)
    out = [1] * right + [0] * (n - right)
    rng.shuffle(out)
    return out


def base_items(rate=0.5, seed=0):
    return {s: answers(rate, seed=seed + i) for i, s in enumerate(SUBJECTS)}


def verdict(report, name):
    return report.row(name)


def test_clear_winner_is_significant():
    strong = candidate("checkpoint-200", base_items(0.7), step=200)
    weak = candidate("checkpoint-100", base_items(0.4, seed=50), step=100)
    report = select([weak, strong], SelectionPolicy())
    assert report.champion == "checkpoint-200"
    assert not report.noise.within_noise and report.noise.mcnemar_p < 0.001
    assert "best MMLU" in verdict(report, "checkpoint-200").reason


def test_marginal_winner_regressing_on_guarded_domains_is_rejected():
    """The FF_3.13 case: ckpt-200 is +0.12pp overall but worse on the weak domains; ckpt-150 wins."""
    runner = base_items(0.5)
    leader = {s: list(v) for s, v in runner.items()}
    # the leader loses 12 stem items and gains 13 elsewhere: +1 item overall (+0.17pp)
    for s in ("astronomy", "college_mathematics"):
        flipped = [i for i, x in enumerate(leader[s]) if x == 1][:6]
        for i in flipped:
            leader[s][i] = 0
    gained = 0
    for s in ("marketing", "sociology", "philosophy"):
        for i, x in enumerate(leader[s]):
            if x == 0 and gained < 13:
                leader[s][i] = 1
                gained += 1
    policy = SelectionPolicy(
        margin=0.005, guarded_domains=["stem"], max_guard_regressions=0, regression_tolerance_se=1.0
    )
    report = select(
        [candidate("checkpoint-200", leader, step=200), candidate("checkpoint-150", runner, step=150)], policy
    )
    assert report.champion == "checkpoint-150"
    rejected = verdict(report, "checkpoint-200")
    assert rejected.status == "rejected"
    assert "below the 0.50% margin" in rejected.reason and "stem" in rejected.reason


def test_marginal_winner_without_regressions_is_kept():
    runner = base_items(0.5)
    leader = {s: list(v) for s, v in runner.items()}
    leader["marketing"][leader["marketing"].index(0)] = 1
    policy = SelectionPolicy(margin=0.05, guarded_domains=["stem", "humanities"])
    report = select([candidate("a", leader), candidate("b", runner)], policy)
    assert report.champion == "a"


def test_winner_inside_the_noise_is_chosen_but_flagged():
    runner = base_items(0.5)
    leader = {s: list(v) for s, v in runner.items()}
    for s in ("marketing", "sociology"):
        leader[s][leader[s].index(0)] = 1
    report = select([candidate("a", leader), candidate("b", runner)], SelectionPolicy(margin=0.0))
    assert report.champion == "a"
    assert report.noise.within_noise and report.noise.mcnemar_p > 0.05
    assert "within noise" in verdict(report, "a").reason


def test_slerp_merge_that_wins_becomes_champion():
    ckpt = candidate("checkpoint-150", base_items(0.5), step=150)
    merge = candidate("slerp-t0.1", base_items(0.62, seed=7), kind="merge")
    report = select([ckpt, merge], SelectionPolicy())
    assert report.champion == "slerp-t0.1"
    assert verdict(report, "slerp-t0.1").kind == "merge"


def test_ties_prefer_bench_then_checkpoints_then_later_steps():
    same = base_items(0.5)
    report = select(
        [
            candidate("slerp-t0.1", same, kind="merge"),
            candidate("checkpoint-10", same, step=10),
            candidate("checkpoint-30", same, step=30),
        ],
        SelectionPolicy(),
    )
    assert report.champion == "checkpoint-30"
    report = select(
        [candidate("checkpoint-10", same, step=10, bench=0.9), candidate("checkpoint-30", same, step=30, bench=0.2)],
        SelectionPolicy(),
    )
    assert report.champion == "checkpoint-10"


def test_paired_statistics():
    diff, se = paired_difference([1, 1, 0, 0], [1, 0, 0, 0])
    assert diff == 0.25 and se > 0
    assert mcnemar_p([1] * 10, [1] * 10) == 1.0
    assert mcnemar_p([1] * 20 + [0] * 20, [0] * 20 + [0] * 20) < 1e-5


def test_selection_without_a_bench():
    strong, weak = candidate("a", base_items(0.7)), candidate("b", base_items(0.4, seed=9))
    for cand in (strong, weak):
        cand["scores"]["bench"] = None
    report = select([weak, strong], SelectionPolicy())
    assert report.champion == "a" and verdict(report, "a").bench is None


# --- the bench guard and the gate against the stage's input model ---------------------------------


def bench_scores(passes: dict[str, list[int]]) -> dict:
    items = [
        {"id": f"{cat}-{i:02d}", "category": cat, "answer": "…", "passed": bool(p), "reason": "constructed"}
        for cat, values in passes.items()
        for i, p in enumerate(values)
    ]
    categories = {c: {"passed": sum(v), "total": len(v), "score": sum(v) / len(v)} for c, v in passes.items()}
    passed = sum(it["passed"] for it in items)
    return {
        "passed": passed,
        "total": len(items),
        "score": passed / len(items),
        "categories": categories,
        "items": items,
    }


def scored(name, items, passes, kind="checkpoint", step=None):
    return {
        "name": name,
        "kind": kind,
        "step": step,
        "scores": {"mmlu": mmlu_scores(items), "bench": bench_scores(passes)},
    }


BENCH = {"format": [0] * 24 + [1], "geography": [1] * 12 + [0] * 13, "science": [1] * 10 + [0] * 15}


def with_flips(passes: dict[str, list[int]], category: str, gained: int = 0, lost: int = 0) -> dict:
    out = {c: list(v) for c, v in passes.items()}
    values = out[category]
    for i in [i for i, x in enumerate(values) if x == 0][:gained]:
        values[i] = 1
    for i in [i for i, x in enumerate(values) if x == 1][:lost]:
        values[i] = 0
    return out


def test_gate_fails_a_champion_that_collapses_one_bench_category():
    from slm.config import GateSpec
    from slm.eval.scores import Candidate
    from slm.eval.selection import gate

    items = base_items(0.3)
    start = Candidate.model_validate(scored("input model", items, BENCH, kind="precursor"))
    worse = Candidate.model_validate(scored("checkpoint-50", items, with_flips(BENCH, "geography", lost=9)))
    verdict_ = gate(worse, start, GateSpec())
    assert not verdict_.passed
    assert verdict_.reason == (
        "not promoted: regresses vs its input model — bench 14/75 vs 23/75 (p = 0.00391); "
        "bench:geography 3/25 vs 12/25 (p = 0.00391)"
    )
    failed = {t.what for t in verdict_.tests if t.worse}
    assert failed == {"bench", "bench:geography"}
    # per-category testing is what catches a loss the overall count could hide behind gains elsewhere
    mixed = Candidate.model_validate(
        scored("checkpoint-60", items, with_flips(with_flips(BENCH, "geography", lost=7), "format", gained=7))
    )
    assert not gate(mixed, start, GateSpec()).passed
    assert gate(mixed, start, GateSpec(bench_categories=False)).passed


def test_gate_passes_noise_sized_changes_and_clear_gains():
    from slm.config import GateSpec
    from slm.eval.scores import Candidate
    from slm.eval.selection import gate

    items = base_items(0.3)
    start = Candidate.model_validate(scored("input model", items, BENCH, kind="precursor"))
    noisy = {s: list(v) for s, v in items.items()}
    noisy["astronomy"][:3] = [1 - x for x in noisy["astronomy"][:3]]
    better = Candidate.model_validate(
        scored("checkpoint-50", noisy, with_flips(with_flips(BENCH, "format", gained=15), "science", lost=2))
    )
    verdict_ = gate(better, start, GateSpec())
    assert verdict_.passed, verdict_.reason
    fmt = next(t for t in verdict_.tests if t.what == "bench:format")
    assert (fmt.candidate, fmt.input) == (16, 1) and fmt.p < 0.001 and not fmt.worse
    assert [t.what for t in verdict_.tests] == [
        "MMLU",
        "bench",
        "bench:format",
        "bench:geography",
        "bench:science",
    ]


def test_gate_fails_a_significant_mmlu_drop():
    from slm.config import GateSpec
    from slm.eval.scores import Candidate
    from slm.eval.selection import gate

    start = Candidate.model_validate(scored("input model", base_items(0.6), BENCH, kind="precursor"))
    dropped = {s: [0 if i % 2 == 0 else x for i, x in enumerate(v)] for s, v in base_items(0.6).items()}
    worse = Candidate.model_validate(scored("checkpoint-50", dropped, BENCH))
    verdict_ = gate(worse, start, GateSpec())
    assert not verdict_.passed and "MMLU" in verdict_.reason


def test_bench_guard_rejects_an_insignificant_mmlu_leader_that_loses_the_bench():
    runner_items = base_items(0.5)
    leader_items = {s: list(v) for s, v in runner_items.items()}
    leader_items["marketing"][[i for i, x in enumerate(leader_items["marketing"]) if x == 0][0]] = 1  # +1 item
    leader = scored("checkpoint-100", leader_items, with_flips(BENCH, "geography", lost=10), step=100)
    runner = scored("checkpoint-50", runner_items, BENCH, step=50)
    report = select([leader, runner], SelectionPolicy())
    assert report.champion == "checkpoint-50"
    row = report.row("checkpoint-100")
    assert row.status == "rejected" and "passes significantly fewer bench prompts than checkpoint-50" in row.reason
    assert select([leader, runner], SelectionPolicy(bench_guard=False)).champion == "checkpoint-100"


def test_bench_guard_lets_a_significant_mmlu_lead_through():
    leader = scored("checkpoint-100", base_items(0.75, seed=9), with_flips(BENCH, "geography", lost=10), step=100)
    runner = scored("checkpoint-50", base_items(0.45), BENCH, step=50)
    report = select([leader, runner], SelectionPolicy())
    assert report.champion == "checkpoint-100"
    assert "bench:geography" in {r["domain"] for r in report.row("checkpoint-100").regressions}


def test_bench_runs_on_different_prompts_are_not_compared():
    import pytest

    from slm.eval.scores import BenchScores
    from slm.eval.selection import paired_bench

    a = BenchScores.model_validate(bench_scores(BENCH))
    b = BenchScores.model_validate(bench_scores({**BENCH, "format": [0] * 20}))
    with pytest.raises(ValueError, match="different prompts"):
        paired_bench(a, b)


def test_a_merge_within_noise_of_the_best_checkpoint_is_kept_as_a_backup():
    ckpt = candidate("checkpoint-150", base_items(0.5), step=150)
    items = base_items(0.5)
    s = next(iter(items))
    items[s][items[s].index(0)] = 1  # one item better: higher MMLU, nowhere near significant
    average = candidate("avg-last2", items, kind="merge")
    report = select([ckpt, average], SelectionPolicy(margin=0.0))
    assert report.champion == "checkpoint-150"
    backup = verdict(report, "avg-last2")
    assert backup.status == "backup" and "not beyond noise" in backup.reason and "checkpoint-150" in backup.reason


def bench_with_margins(margins: list[float]) -> dict:
    items = [
        {"id": f"i{k}", "category": "c", "answer": "x", "passed": True, "reason": "", "margin": m}
        for k, m in enumerate(margins)
    ]
    n = len(items)
    return {
        "passed": n,
        "total": n,
        "score": 1.0,
        "categories": {"c": {"passed": n, "total": n, "score": 1.0}},
        "items": items,
    }


def test_the_continuous_gate_refuses_a_real_drop_and_not_a_trivial_significant_one():
    from slm.config import GateSpec
    from slm.eval.scores import Candidate
    from slm.eval.selection import gate

    rng = random.Random(3)
    base = [rng.uniform(-3, -0.5) for _ in range(100)]

    def model(name, margins):
        c = candidate(name, base_items(0.5))
        c["scores"]["bench"] = bench_with_margins(margins)
        return Candidate.model_validate(c)

    start = model("input", base)
    damaged = model("damaged", [m - 0.3 + rng.gauss(0, 0.05) for m in base])
    rounded = model("bf16", [m - 0.006 + rng.gauss(0, 0.002) for m in base])  # like a bf16 round trip
    same = model("resaved", base)
    refused = gate(damaged, start, GateSpec())
    (overall, *_) = refused.continuous
    assert not refused.passed and overall.worse and overall.effect < -0.25 and overall.p < 1e-10
    assert "bench-margin" in refused.reason and "beyond the floor 0.05" in refused.reason
    trivial = gate(rounded, start, GateSpec())
    assert trivial.continuous[0].p < 1e-10 and not trivial.continuous[0].worse and trivial.passed  # under the floor
    assert gate(same, start, GateSpec()).passed and gate(same, start, GateSpec()).continuous[0].p == 1.0
    reported = gate(damaged, start, GateSpec(continuous=False))  # measured and shown, not gating
    assert reported.passed and reported.continuous[0].worse and "reported, not gating" in reported.reason


def test_the_held_out_bench_is_gated_on_but_never_chosen_by():
    from slm.config import GateSpec
    from slm.eval.scores import Candidate
    from slm.eval.selection import bench_regressions, gate

    items = base_items(0.5)
    heldout = {"person": [1] * 15 + [0] * 7, "science": [1] * 10 + [0] * 12}
    start = Candidate.model_validate(scored("input", items, BENCH, kind="precursor"))
    start.scores.heldout = start.scores.bench.model_validate(bench_scores(heldout))
    forgot = Candidate.model_validate(scored("forgot", items, BENCH))
    forgot.scores.heldout = start.scores.bench.model_validate(bench_scores(with_flips(heldout, "person", lost=9)))
    verdict = gate(forgot, start, GateSpec())
    worse = [t.what for t in verdict.tests if t.worse]
    assert (
        not verdict.passed
        and worse == ["heldout", "heldout:person"]
        and "heldout:person 6/22 vs 15/22" in verdict.reason
    )
    assert {"heldout", "heldout:science"} <= {t.what for t in verdict.tests}
    # the bench guard between two checkpoints does not look at it: it stays out of every choice
    assert bench_regressions(forgot.scored, start.scored, 0.05) == []


def drift_scores(logprobs: list[float], own: bool, references: str = "r1") -> dict:
    return {
        "answers": {f"d{k}": "reply" for k in range(len(logprobs))},
        "references": references,
        "own": own,
        "logprob": {f"d{k}": lp for k, lp in enumerate(logprobs)},
    }


def test_the_drift_test_pairs_a_candidate_with_the_replies_it_was_scored_on():
    from slm.config import GateSpec
    from slm.eval.scores import Candidate, DriftScores
    from slm.eval.selection import gate

    rng = random.Random(5)
    base = [rng.uniform(-1.2, -0.3) for _ in range(40)]

    def model(name, drift):
        c = Candidate.model_validate(candidate(name, base_items(0.5)))
        c.scores.drift = DriftScores.model_validate(drift)
        return c

    start = model("input", drift_scores(base, own=True))
    moved = model("moved", drift_scores([x - 0.3 + rng.gauss(0, 0.05) for x in base], own=False))
    (test,) = [t for t in gate(moved, start, GateSpec()).continuous if t.what == "drift-loglik"]
    assert test.worse and test.effect < -0.25 and test.floor == 0.05
    assert not gate(moved, start, GateSpec()).passed
    close = model("close", drift_scores([x - 0.02 + rng.gauss(0, 0.01) for x in base], own=False))
    (test,) = [t for t in gate(close, start, GateSpec()).continuous if t.what == "drift-loglik"]
    assert test.p < 0.001 and not test.worse  # significant, under the floor
    # scored on another model's replies: nothing to pair, so no test (never a wrong one)
    other = model("other", drift_scores(base, own=False, references="r2"))
    assert all(t.what != "drift-loglik" for t in gate(other, start, GateSpec()).continuous)
