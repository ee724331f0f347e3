"""Where everything lives in a store: the one module that spells store keys.

champions/<line>/<version>/          a promoted model (version `v<N>-<stage>`), latest.json beside them
runs/<stage>/<run_id>/               record.json, checkpoints/, train/, sweep/, merges/
datasets/<stage>/                    written by the data builders (their configs name the key)
scores/<weights>-<settings>.json     the sweep's score cache
experiments/<line>/<run_id>.json     experiment verdicts
gates/<line>/<stage>.json            the newest champion of a stage the gate kept out
"""

from __future__ import annotations

import re

from slm.store import Store

VERSION = re.compile(r"v(\d+)-([a-z]+)")
CHECKPOINT = re.compile(r"checkpoint-(\d+)")
RUN_KEY = re.compile(r"runs/([a-z]+)/\1-[0-9a-f]{10}")
LINE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # as PipelineConfig.line


def check_names(line: str, version: str | None = None) -> None:
    """A line or version name typed by a user is a name, never a path joined into a key."""
    from slm.errors import UserError

    if not LINE.fullmatch(line) or ".." in line:
        raise UserError(f"{line!r} is not a line name (letters, digits, '_', '.', '-')")
    if version is not None and not VERSION.fullmatch(version):
        raise UserError(f"{version!r} is not a version name (v<N>-<stage>, e.g. v2-sft)")


def line_dir(line: str) -> str:
    return f"champions/{line}"


def champion_dir(line: str, version: str) -> str:
    return f"champions/{line}/{version}"


def version_claim(line: str, version: str) -> str:
    """Created exclusively before a version's files: the one promotion that made it owns the version."""
    return f"{champion_dir(line, version)}/_CLAIM.json"


def latest_pointer(line: str) -> str:
    return f"champions/{line}/latest.json"


def line_history(line: str) -> str:
    """Deliberate moves of `latest` (rollbacks), one JSON file each, named by time."""
    return f"champions/{line}/history"


ROLLBACK_SUFFIX = "-rollback.json"


def rollback_event(line: str, at: str) -> str:
    return f"{line_history(line)}/{at.replace(':', '')}{ROLLBACK_SUFFIX}"


def rollback_events(store: Store, line: str) -> list[str]:
    """Keys of the line's rollback events, oldest first."""
    return [f"{line_history(line)}/{n}" for n in store.children(line_history(line)) if n.endswith(ROLLBACK_SUFFIX)]


CHAMPION_INFO = "champion.json"


def champion_info(champion_key: str) -> str:
    return f"{champion_key}/{CHAMPION_INFO}"


def version_name(number: int, stage: str) -> str:
    return f"v{number}-{stage}"


def version_number(version: str) -> int:
    return int(VERSION.fullmatch(version).group(1))


def versions(store: Store, line: str, stage: str | None = None) -> list[tuple[int, str]]:
    """Complete champion versions of a line (optionally from one stage), oldest first."""
    out = []
    for name in store.children(line_dir(line)):
        m = VERSION.fullmatch(name)
        if m and (stage is None or m.group(2) == stage) and store.is_complete(champion_dir(line, name)):
            out.append((int(m.group(1)), name))
    return sorted(out)


def next_version(store: Store, line: str, stage: str) -> str:
    """The next free version number, counting incomplete directories too: versions are never reused."""
    numbers = [int(m.group(1)) for v in store.children(line_dir(line)) if (m := VERSION.fullmatch(v))]
    return version_name(max(numbers, default=0) + 1, stage)


def stage_runs(stage: str) -> str:
    return f"runs/{stage}"


def run_prefix(stage: str, run_id: str) -> str:
    return f"runs/{stage}/{run_id}"


def run_record(run: str) -> str:
    return f"{run}/record.json"


def checkpoints_dir(run: str) -> str:
    return f"{run}/checkpoints"


def checkpoint_name(step: int) -> str:
    """A checkpoint's directory name, in the store and in the Trainer's local output directory alike."""
    return f"checkpoint-{step}"


def checkpoint_dir(run: str, step: int) -> str:
    return f"{checkpoints_dir(run)}/{checkpoint_name(step)}"


def checkpoint_uploads(run: str, step: int) -> str:
    """Each node's record of the files it uploaded for a checkpoint, until rank 0 writes the marker
    (beside the checkpoints, not among them: listings match checkpoint-N only)."""
    return f"{checkpoints_dir(run)}/_uploads/{checkpoint_name(step)}"


def train_dir(run: str) -> str:
    return f"{run}/train"


def engine_facts(run: str) -> str:
    """What the worker group reported when training ended (world size, ZeRO stage, tokens seen)."""
    return f"{train_dir(run)}/engine.json"


def init_gate(run: str) -> str:
    """The step-0 loss of a pretrained init and the gate's verdict on it (slm/callbacks.py InitGateCallback)."""
    return f"{train_dir(run)}/init_gate.json"


def log_history(run: str) -> str:
    return f"{train_dir(run)}/log_history.json"


def loss_plot(run: str) -> str:
    return f"{train_dir(run)}/loss.png"


def train_log_csv(run: str) -> str:
    return f"{train_dir(run)}/train_log.csv"


def tensorboard_event(run: str, name: str) -> str:
    return f"{train_dir(run)}/tensorboard/{name}"


def worker_starts(run: str) -> str:
    """One JSON file per start of the run's worker group (first launch, restarts, reruns), named by time."""
    return f"{train_dir(run)}/starts"


def worker_start(run: str, stamp: str) -> str:
    return f"{worker_starts(run)}/{stamp}.json"


def sweep_dir(run: str) -> str:
    return f"{run}/sweep"


def selection_file(report_dir: str, ext: str = "json") -> str:
    """A sweep's selection report (json, md, png) in its report directory (a run's sweep/, an evaluation)."""
    return f"{report_dir}/selection.{ext}"


def candidate_file(report_dir: str, name: str) -> str:
    """One scored candidate of a sweep, beside its selection report."""
    return f"{report_dir}/{name}.json"


def selection_report(run: str) -> str:
    return selection_file(sweep_dir(run))


def sweep_candidate(run: str, name: str) -> str:
    return candidate_file(sweep_dir(run), name)


def merges_dir(run: str) -> str:
    return f"{run}/merges"


def score_cache(weights_digest: str, settings_digest: str) -> str:
    return f"scores/{weights_digest}-{settings_digest}.json"


def drift_references(weights_digest: str, settings_digest: str) -> str:
    """A reference model's greedy replies to the drift set (eval/drift.py), cached like its scores."""
    return f"scores/drift-{weights_digest}-{settings_digest}.json"


def experiments_dir(line: str) -> str:
    return f"experiments/{line}"


def experiment_verdict(line: str, run_id: str) -> str:
    return f"{experiments_dir(line)}/{run_id}.json"


def experiment_verdicts(store: Store, line: str) -> list[str]:
    return [f"{experiments_dir(line)}/{n}" for n in store.children(experiments_dir(line)) if n.endswith(".json")]


def gates_dir(line: str) -> str:
    return f"gates/{line}"


def not_promoted(line: str, stage: str) -> str:
    """The newest verdict of the gate that kept a stage's champion out of the line (selection.gate)."""
    return f"{gates_dir(line)}/{stage}.json"


def complete_checkpoints(store: Store, run: str) -> list[tuple[int, str]]:
    """The one checkpoint lister: (step, key) of every checkpoint with its completion marker, by step.

    A checkpoint without the marker (a job killed mid-upload) is never listed, so neither resume nor
    the sweep can pick it.
    """
    out = []
    for name in store.children(checkpoints_dir(run)):
        m = CHECKPOINT.fullmatch(name)
        if m and store.is_complete(f"{checkpoints_dir(run)}/{name}"):
            out.append((int(m.group(1)), f"{checkpoints_dir(run)}/{name}"))
    return sorted(out)


def latest_checkpoint(store: Store, run: str) -> str | None:
    found = complete_checkpoints(store, run)
    return found[-1][1] if found else None


def dataset_shard(split: str, index: int) -> str:
    """A Parquet shard's path inside a dataset tree (its manifest lists them)."""
    return f"{split}/shard-{index:05d}.parquet"


def teacher_work(dataset: str, build_digest: str) -> str:
    """The distill builder's answered shards while it works (resumable), beside the dataset it builds."""
    return f"{dataset.rstrip('/')}.teacher/{build_digest}"


def teacher_shard(work: str, index: int) -> str:
    return f"{work}/shard-{index:05d}.json"


def merge_dir(merges: str, name: str) -> str:
    """A SLERP merge's model tree under a run's (or an evaluation's) merges/."""
    return f"{merges}/{name}"


def champion_plot(name: str) -> str:
    """A plot's path inside a champion's directory (what champion.json and the card link to)."""
    return f"plots/{name}.png"


def tree_file(tree: str, rel: str) -> str:
    """A file of a tree (checkpoint, champion, dataset) by its path relative to the tree."""
    return f"{tree}/{rel}"


def dataset_manifest(dataset: str) -> str:
    """A built dataset's manifest.json (rows, shards with checksums, sources, hygiene)."""
    return f"{dataset}/manifest.json"


def model_config(model_key: str) -> str:
    """A model tree's config.json (checkpoints, champions, store: references)."""
    return f"{model_key}/config.json".lstrip("/")


def evaluation_dir(name: str) -> str:
    """Reports of the standalone evaluator (launch/evaluate.py)."""
    return f"evaluations/{name}"
