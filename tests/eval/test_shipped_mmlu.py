"""The MMLU subset the repository ships for the embedded default: the release's bytes, every subject
the default pipeline scores, and a clear error for a subject it does not hold."""

import hashlib

import pytest

from slm import REPO_ROOT
from slm.config import PipelineConfig, load_yaml_config, resolve_path
from slm.errors import UserError
from slm.eval import mmlu

SHIPPED = REPO_ROOT / "eval/data/mmlu"


def test_files_match_the_release_checksums():
    lines = (SHIPPED / "SHA256SUMS").read_text().split("\n")
    sums = dict(reversed(line.split()) for line in lines if line)
    assert len(sums) == 12
    for name, digest in sums.items():
        assert hashlib.sha256((SHIPPED / name).read_bytes()).hexdigest() == digest, name


@pytest.mark.parametrize("config", ["stages/pipeline.yaml", "stages/examples/tiny-with-experiments.yaml"])
def test_the_embedded_pipelines_read_only_what_is_shipped(config, tmp_path):
    sweep = load_yaml_config(config, PipelineConfig).sweep
    assert resolve_path(sweep.mmlu_dir) == SHIPPED
    assert mmlu.write_tasks(SHIPPED, mmlu.select_subjects(sweep.subjects), tmp_path) == ["mmlu_csv"]
    assert mmlu.count_items(SHIPPED, sweep.subjects)["astronomy"] == 152


def test_a_subject_that_is_not_shipped_is_named(tmp_path):
    with pytest.raises(UserError, match=r"no test file for anatomy .*point mmlu_dir at a full MMLU copy"):
        mmlu.write_tasks(SHIPPED, ["astronomy", "anatomy"], tmp_path)
