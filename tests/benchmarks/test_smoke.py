"""Every benchmark script runs in its --smoke mode and ends with its `ratio: <number>` line.

Two benchmarks once broke unnoticed after refactors; this is what keeps them running. The figures
themselves are not checked here (timed assertions do not belong in tests): only that each script
works end to end and prints its headline ratio.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from slm import REPO_ROOT

BENCHMARKS = sorted(p for p in (REPO_ROOT / "benchmarks").glob("*.py") if 'if __name__ == "__main__"' in p.read_text())
# Scripts that compare with lm-eval's own `mmlu` group need every subject: a full MMLU copy beside the checkout.
NEEDS_FULL_MMLU = {"mmlu_parity.py"}
FULL_MMLU = REPO_ROOT / "../shared/data/mmlu"
RATIO = re.compile(r"^ratio: (-?\d+(\.\d+)?)$")


def test_every_benchmark_is_listed():
    names = {p.name for p in BENCHMARKS}
    assert {"train_throughput.py", "sweep_speed.py", "data_scale.py", "mmlu_parity.py"} <= names
    assert {"packing.py", "loss_memory.py", "gpu_check.py", "checkpoint_stall.py"} <= names


@pytest.mark.slow
@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.stem)
def test_benchmark_smoke(script: Path, tmp_path):
    if script.name in NEEDS_FULL_MMLU and not (FULL_MMLU / "test").is_dir():
        pytest.skip(f"{script.name} needs a full MMLU copy at {FULL_MMLU}")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "SLM_CACHE": str(tmp_path / "cache")}
    out = subprocess.run(
        [sys.executable, str(script), "--smoke"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, f"{script.name} --smoke failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    last = out.stdout.strip().splitlines()[-1]
    match = RATIO.match(last)
    assert match, f"{script.name} --smoke did not end with 'ratio: <number>' (last line: {last!r})"
    assert float(match.group(1)) >= 0  # a stall removed entirely is a ratio of 0
