"""The distribution: the wheel built from this checkout, installed (not editable) into a fresh venv,
gives a working `slm` that finds its configs, fixtures and data inside the installed package.

The fresh venv gets this environment's third-party packages through a path entry (no download), but
not the checkout: it is run from an empty directory, and the editable install's finder is not seen
(.pth files on an added path are not processed)."""

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import yaml

from slm import REPO_ROOT


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    root = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(root / "dist"),
            str(REPO_ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    (wheel,) = (root / "dist").glob("slm_pipeline-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "deps-of-the-test-environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-2000:]
    work = root / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
    }
    return wheel, venv, work, env


def test_the_wheel_is_one_namespace_with_its_data(installed):
    wheel, *_ = installed
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.startswith("slm_pipeline-")}
    assert top == {"slm"}, f"top-level names besides slm: {top}"
    for data in (
        "slm/stages/configs/sft.yaml",
        "slm/ds_configs/zero2.json",
        "slm/eval/benches/truth106.jsonl",
        "slm/eval/data/mmlu/SHA256SUMS",
        "slm/data_builders/fixtures/sft/instructions.jsonl",
        "slm/eval/tasks/mmlu_csv/_mmlu_csv.yaml",
        "slm/launch/docker-entrypoint.sh",
    ):
        assert data in names, data
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    for declared in ("numpy", "scipy", "filelock", "pyarrow", "matplotlib", "tensorboard"):
        assert f"Requires-Dist: {declared}" in metadata, declared
    # TRL is a core dependency since packing (its pack_dataset and padding-free collator), not only dpo's
    assert "Requires-Dist: trl>=1.0\n" in metadata


def test_slm_help_print_config_and_dry_run_from_the_installed_package(installed):
    _, venv, work, env = installed
    slm = str(venv / "bin" / "slm")

    def run(*args):
        proc = subprocess.run([slm, *args], cwd=work, capture_output=True, text=True, timeout=300, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import slm, slm.eval.bench as b; print(b.__file__)"],
        cwd=work,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout + where.stderr
    assert "stage" in run("--help")
    config = yaml.safe_load(run("stage", "repair", "--print-config", "--set", "train.lr=1e-5"))
    assert config["stages"]["repair"]["config"]["train"]["lr"] == 1e-5
    assert Path(config["stages"]["repair"]["config_file"]).is_relative_to(venv)  # the shipped config
    assert config["pipeline"]["store"] == str(work / "artifacts/store")  # outputs go where the user is
    plan = run("pipeline", "--dry-run")
    assert "[repair]" in plan and "ZeRO-2 (ds_configs/zero2.json)" in plan and "(106 prompts)" in plan
    assert not (work / "artifacts").exists()
