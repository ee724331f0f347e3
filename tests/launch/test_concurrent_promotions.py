"""Two `launch/promote.py` at once on one store, as two users would start them: two versions (or one
clean refusal), never two successes for one version and never one promotion's weights lost."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from slm import REPO_ROOT, layout
from slm.eval.sweep import weights_digest
from slm.orchestration.lineage import read_champion
from slm.store import Store
from tests.support.gated_line import LINE, pipeline_overrides


def test_two_promote_commands_started_together_make_two_versions(gated_line, tmp_path):
    store_dir = tmp_path / "store"
    shutil.copytree(gated_line["pristine"], store_dir)
    (run_dir,) = (store_dir / "runs/surgical").iterdir()
    run = layout.run_prefix("surgical", run_dir.name)
    settings = [arg for pair in pipeline_overrides(gated_line["root"]) for arg in ("--set", pair)]
    env = {**os.environ, "SLM_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}

    def start(candidate: str, reason: str) -> subprocess.Popen:
        argv = [sys.executable, "launch/promote.py", run, "--candidate", candidate, "--reason", reason]
        return subprocess.Popen(
            [*argv, "--store", str(store_dir), *settings],
            cwd=REPO_ROOT,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    procs = [start("checkpoint-3", "A"), start("checkpoint-6", "B")]
    outputs = [p.communicate(timeout=300) for p in procs]
    codes = [p.returncode for p in procs]
    assert all(code in (0, 2) for code in codes), outputs
    store = Store.open(str(store_dir))
    promoted = {}
    for code, (out, err) in zip(codes, outputs):
        if code == 2:  # a clean refusal: one error line, no traceback
            assert "Traceback" not in err and len([x for x in err.splitlines() if x.startswith("error:")]) == 1, err
            continue
        url = out.strip().splitlines()[-1]  # promote.py prints where the champion now lives
        assert url.startswith(str(store_dir)), out
        promoted[url.rsplit("/", 1)[-1]] = err
    assert len(promoted) == codes.count(0), outputs  # two successes never share a version
    assert sorted(promoted) == ["v2-surgical", "v3-surgical"], outputs  # this store's design: both, in turn
    sources = set()
    for version in promoted:
        champion = read_champion(store, layout.champion_dir(LINE, version))
        assert weights_digest(store, champion.key) == champion.weights_digest  # its own files, all there
        sources.add(champion.source_key)
    assert len(sources) == len(promoted)
    latest = store.read_json(layout.latest_pointer(LINE))["version"]
    assert latest == max(promoted, key=layout.version_number)
