"""The plots people look at are real images of the data given."""

from slm import plots

PNG = b"\x89PNG\r\n\x1a\n"


def test_loss_curve_and_line_history_are_pngs(tmp_path):
    history = [{"step": s, "loss": 5.0 / s} for s in range(1, 31)] + [{"step": 30, "eval_loss": 0.4}]
    loss = plots.loss_curve(history, "sft · sft-1234", checkpoints=[10, 20, 30])
    points = [
        {"version": "v1-pretrain", "mmlu": 0.25, "mmlu_se": 0.04, "bench": None},
        {"version": "v2-sft", "mmlu": 0.27, "mmlu_se": 0.04, "bench": 0.4},
    ]
    line = plots.line_history(points, "tiny-ff")
    assert loss[:8] == PNG and line[:8] == PNG and len(loss) > 5000 and len(line) > 5000
    # a different curve is a different picture (the data is drawn, not a fixed image)
    assert plots.loss_curve([{"step": s, "loss": float(s)} for s in range(1, 31)], "sft · sft-1234") != loss
