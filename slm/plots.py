"""Plots people look at: a run's loss curve and a line's scores along its champions (PNG bytes).

The sweep's own plot (MMLU ± SE per candidate) is eval/report.py's; promotion copies all three into
the champion (plots/) and the card embeds them.
"""

from __future__ import annotations

import io


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    _pyplot().close(fig)
    return buf.getvalue()


def loss_curve(log_history: list[dict], title: str, checkpoints: list[int] = ()) -> bytes:
    """Training loss per logged step (and eval loss where the run evaluated), checkpoints marked."""
    plt = _pyplot()
    train = [(h["step"], h["loss"]) for h in log_history if "loss" in h and "step" in h]
    evals = [(h["step"], h["eval_loss"]) for h in log_history if "eval_loss" in h]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    if train:
        ax.plot(*zip(*train), color="tab:blue", linewidth=1.2, label="train loss")
    if evals:
        ax.plot(*zip(*evals), "o-", color="tab:orange", label="eval loss")
    for i, step in enumerate(checkpoints):
        ax.axvline(step, color="tab:gray", linestyle=":", linewidth=0.8, label="checkpoint" if i == 0 else None)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend(loc="upper right")
    return _png(fig)


def line_history(points: list[dict], title: str) -> bytes:
    """MMLU (± SE) and the bench pass rate of each champion of a line, oldest first.
    points: {"version", "mmlu", "mmlu_se", "bench" (or None)}."""
    plt = _pyplot()
    x = list(range(len(points)))
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(points)), 3.8))
    ax.errorbar(
        x,
        [p["mmlu"] for p in points],
        yerr=[p["mmlu_se"] or 0 for p in points],
        fmt="o-",
        color="tab:blue",
        capsize=4,
        label="MMLU (± SE)",
    )
    ax.set_ylabel("MMLU accuracy")
    ax.set_xticks(x, [p["version"] for p in points], rotation=20, ha="right")
    if any(p["bench"] is not None for p in points):
        ax2 = ax.twinx()
        ax2.plot(
            [i for i, p in zip(x, points) if p["bench"] is not None],
            [p["bench"] for p in points if p["bench"] is not None],
            "s--",
            color="tab:green",
            label="bench",
        )
        ax2.set_ylabel("bench pass rate")
        ax2.set_ylim(0, 1)
        ax2.legend(loc="lower right")
    ax.legend(loc="upper left")
    ax.set_title(title)
    return _png(fig)
