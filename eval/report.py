"""The selection report as Markdown (for people and the model card) and a PNG of scores per candidate."""

from __future__ import annotations

from pathlib import Path

from slm.eval.scores import GateVerdict, Selection, SelectionRow


def pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.2%}"


def markdown_table(report: Selection) -> str:
    domains = sorted({d for row in report.candidates for d in row.domains})
    dev = any(row.mmlu_dev is not None for row in report.candidates)
    head = [
        "Candidate",
        "Kind",
        "MMLU",
        *(["MMLU dev"] if dev else []),
        *[d.replace("_", " ") for d in domains],
        "Bench (correct)",
        "In form",
        "Status",
        "Reason",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in report.candidates:
        name = f"**{row.name}**" if row.status == "champion" else row.name
        cells = [
            name,
            row.kind or "",
            f"{pct(row.mmlu)} ± {pct(row.mmlu_se)}",
            *([pct(row.mmlu_dev)] if dev else []),
            *[pct(row.domains.get(d)) for d in domains],
            "—" if row.bench is None else f"{row.bench_passed}/{row.bench_total}",
            "—" if row.bench_form is None else f"{row.bench_form}/{row.bench_total}",
            row.status,
            row.reason,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if report.noise:
        n = report.noise
        lines.append("")
        lines.append(
            f"Champion vs {n.versus}: {n.delta:+.2%} ± {n.se:.2%} on {n.n} paired items, "
            f"McNemar p = {n.mcnemar_p:.3f} ({'within noise' if n.within_noise else 'significant'} "
            f"at α = {n.alpha})."
        )
    if report.gate:
        lines += ["", gate_table(report.gate)]
    return "\n".join(lines) + "\n"


def gate_table(gate: GateVerdict) -> str:
    """The champion against the stage's input model, one paired test per row."""
    verdict = "passed" if gate.passed else "**failed**"
    lines = [
        f"Gate ({verdict}): {gate.candidate} vs {gate.input_model}, paired exact McNemar tests, "
        f"worse = fewer correct with p < {gate.alpha}. {gate.reason[0].upper()}{gate.reason[1:]}.",
        "",
        "| Test | n | Input model | Champion | Δ | p | Worse | Smallest drop it sees |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for t in gate.tests:
        lines.append(
            f"| {t.what} | {t.n} | {t.input} ({t.input / t.n:.1%}) | "
            f"{t.candidate} ({t.candidate / t.n:.1%}) | {t.delta:+.1%} | {t.p:.3g} | "
            f"{'yes' if t.worse else 'no'} | {seeable(t)} |"
        )
    if gate.continuous:
        lines += [
            "",
            "| Continuous test | n | Δ mean | 95% interval | Wilcoxon p | Floor | Worse |",
            "|---|---|---|---|---|---|---|",
        ]
        for t in gate.continuous:
            lines.append(
                f"| {t.what} | {t.n} | {t.effect:+.4f} {t.unit} | [{t.low:+.4f}, {t.high:+.4f}] | {t.p:.3g} | "
                f"−{t.floor:g} | {'yes' if t.worse else 'no'} |"
            )
    lines += [
        "",
        "Smallest drop it sees: the drop in accuracy the test detects with power 0.8 at α "
        f"= {gate.alpha}, at the disagreement measured between the two models (with none, the best case: "
        "every changed item a loss); a drop below it can pass unseen (eval/power.py).",
    ]
    return "\n".join(lines)


def seeable(t) -> str:
    if t.discordant is None:
        return "—"  # a verdict stored before this was measured
    if t.detectable is None:
        return "none at this disagreement"
    return f"{t.detectable:.1%}"


def plot(report: Selection, reference: list[SelectionRow], out: Path, title: str) -> None:
    """MMLU ± SE per candidate (checkpoints in step order, then merges), bench score on a second axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(report.candidates, key=lambda r: (r.kind != "checkpoint", r.step or 0, r.name))
    rows = reference + rows
    names = [r.name for r in rows]
    x = range(len(rows))
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(rows)), 4))
    colors = [
        "tab:red" if r.status == "champion" else "tab:gray" if r.kind == "precursor" else "tab:blue" for r in rows
    ]
    ax.bar(x, [r.mmlu for r in rows], yerr=[r.mmlu_se for r in rows], color=colors, alpha=0.8, capsize=4)
    baseline = next((r for r in reference if r.kind == "precursor"), None)
    if baseline:  # the input model's MMLU: the baseline every candidate is gated against
        ax.axhline(baseline.mmlu, color="tab:gray", linestyle=":", linewidth=1, label="input model")
    ceiling = next((r for r in reference if r.status == "ceiling"), None)
    if ceiling:  # sweep.reference: what a stronger model scores on the same items
        ax.axhline(ceiling.mmlu, color="tab:purple", linestyle="--", linewidth=1, label="reference ceiling")
    ax.set_ylabel("MMLU accuracy (± SE)")
    ax.set_xticks(list(x), names, rotation=30, ha="right")
    if all(r.bench is not None for r in rows):
        ax2 = ax.twinx()
        ax2.plot(list(x), [r.bench for r in rows], "o--", color="tab:green", label="TRUTH bench")
        ax2.set_ylabel("TRUTH bench pass rate")
        ax2.set_ylim(0, 1)
        ax2.legend(loc="upper right")
    ax.set_title(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
