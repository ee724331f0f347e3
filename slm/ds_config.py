"""A stage's DeepSpeed JSON, read and checked in the driver against DeepSpeed's and the HF Trainer's own
rules, so a config that contradicts the stage is one line before any Ray worker starts.

Inside the workers the same contradictions surface late: HF's `trainer_config_process` raises on a
value that disagrees with TrainingArguments only after Ray has placed the workers, DeepSpeed ignores a
top-level key it does not read, and Python's json takes NaN and a repeated key (the last one wins).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from slm.config import TrainSpec, resolve_path
from slm.errors import UserError


def load_ds_config(path: str, use_gpu: bool, train: TrainSpec | None = None, workers: int = 1) -> dict:
    """The config as the engine will hand it to the HF Trainer. With `train` (and the cluster's worker
    count), the values it states are checked against the stage's: "auto" is the stage's own value."""
    file = resolve_path(path)
    if not file.is_file():
        raise UserError(f"deepspeed config not found: {file}")
    config = read_strict_json(file)
    if not isinstance(config, dict):
        raise UserError(f"{file}: expected a JSON object at the top level")
    if not isinstance(config.get("zero_optimization"), dict):
        raise UserError(f"{file}: no zero_optimization section")
    stage = config["zero_optimization"].get("stage", 0)
    if stage not in (0, 1, 2, 3):
        raise UserError(f"{file}: zero_optimization.stage is {stage!r}; DeepSpeed's ZeRO stages are 0, 1, 2 and 3")
    check_zero_section(file, config["zero_optimization"])
    if train is not None and train.optim:  # the HF Trainer builds train.optim and hands it to DeepSpeed
        config.pop("optimizer", None)
    check_optimizer(file, config)
    if train is not None:
        check_against_stage(file, config, train, workers)
    if not use_gpu and config.get("optimizer", {}).get("type", "").lower() in ("adam", "adamw"):
        # On CPU, torch's AdamW avoids DeepSpeed's JIT build of FusedAdam/CPUAdam (minutes, once per machine).
        config["optimizer"].setdefault("params", {})["torch_adam"] = True
    return config


def read_strict_json(file: Path):
    """JSON without NaN/Infinity (not JSON, but Python's json takes them) and without a key given twice."""

    def no_repeats(pairs):
        seen = {}
        for key, value in pairs:
            if key in seen:
                raise UserError(f"{file}: key {key!r} is given twice (JSON keeps the last one silently)")
            seen[key] = value
        return seen

    def no_constant(name):
        raise UserError(f'{file}: {name} is not a JSON number; give a finite value or "auto"')

    try:
        return json.loads(file.read_text(), object_pairs_hook=no_repeats, parse_constant=no_constant)
    except json.JSONDecodeError as exc:
        raise UserError(f"{file}: not valid JSON ({exc})") from None
    except UnicodeDecodeError:
        raise UserError(f"{file}: not UTF-8 text") from None


def check_zero_section(file: Path, zero: dict) -> None:
    """The zero_optimization section against DeepSpeed's own pydantic model (unknown keys, offload
    devices, types), in the driver: inside the workers it would fail only after Ray has started them."""
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig
    from pydantic import ValidationError

    try:
        DeepSpeedZeroConfig(**zero)
    except ValidationError as exc:
        problems = "; ".join(
            f"zero_optimization.{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise UserError(f"{file}: {problems}") from None


def check_optimizer(file: Path, config: dict) -> None:
    """DeepSpeed's own rule (DeepSpeedEngine._supported_optimizer): one of its optimizers, or a class of torch.optim."""
    import torch
    from deepspeed.runtime.config import DEEPSPEED_OPTIMIZERS

    optimizer = config.get("optimizer")
    if optimizer is None:
        return
    if not isinstance(optimizer, dict) or not isinstance(optimizer.get("type"), str):
        raise UserError(f'{file}: optimizer needs a "type" (e.g. AdamW)')
    name = optimizer["type"]
    if name.lower() not in DEEPSPEED_OPTIMIZERS and not isinstance(getattr(torch.optim, name, None), type):
        raise UserError(
            f"{file}: optimizer.type {name!r} is neither a DeepSpeed optimizer ({', '.join(DEEPSPEED_OPTIMIZERS)}) "
            "nor a class of torch.optim"
        )


def check_against_stage(file: Path, config: dict, train: TrainSpec, workers: int) -> None:
    """The values the config states beside the stage's: HF's own fill-and-compare (the check the Trainer
    makes inside each worker) on a copy, with the cluster's world size; then DeepSpeed's parser on the
    filled copy, for the top-level keys it would not read."""
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    extra = train.extra
    args = SimpleNamespace(
        world_size=workers,
        per_device_train_batch_size=train.micro_batch,
        gradient_accumulation_steps=train.grad_accum,
        max_grad_norm=train.max_grad_norm,
        learning_rate=train.lr,
        adam_beta1=extra.get("adam_beta1", 0.9),
        adam_beta2=extra.get("adam_beta2", 0.999),
        adam_epsilon=extra.get("adam_epsilon", 1e-8),
        weight_decay=train.weight_decay,
        save_on_each_node=False,
        fp16=train.precision == "fp16",
        fp16_full_eval=False,
        bf16=train.precision == "bf16",
        bf16_full_eval=False,
    )
    if _enabled(config, "fp16") and _enabled(config, "bf16"):
        raise UserError(f"{file}: fp16.enabled and bf16.enabled are both true; DeepSpeed trains in one of them")
    filled = HfTrainerDeepSpeedConfig(json.loads(json.dumps(config)))
    filled.trainer_config_process(args)
    if filled.mismatches:
        stage_keys = {
            "per_device_train_batch_size": "train.micro_batch",
            "gradient_accumulation_steps": "train.grad_accum",
            "train_batch_size (calculated)": f"train.micro_batch x train.grad_accum x {workers} worker(s)",
            "max_grad_norm": "train.max_grad_norm",
            "learning_rate": "train.lr",
            "weight_decay": "train.weight_decay",
        }
        said = []
        for line in filled.mismatches:  # "- ds KEY=VAL vs hf NAME=VAL"
            ds_part, hf_part = line.removeprefix("- ds ").split(" vs hf ", 1)
            hf_key, hf_val = hf_part.rsplit("=", 1)
            if hf_key.startswith(("fp16", "bf16")):
                said.append(f"{ds_part} but the stage trains {train.precision} (train.precision)")
            else:
                said.append(f"{ds_part} but the stage's {stage_keys.get(hf_key, hf_key)} gives {hf_val}")
        raise UserError(f'{file}: {"; ".join(said)} (write "auto" to take the stage\'s value)')
    unread = sorted(set(config) - deepspeed_reads(file, filled.config))
    if unread:
        raise UserError(
            f"{file}: DeepSpeed does not read the top-level key(s) {', '.join(map(repr, unread))}; "
            "a misspelt key is silently ignored"
        )


def _enabled(config: dict, section: str) -> bool:
    value = config.get(section)
    return isinstance(value, dict) and value.get("enabled") is True


def deepspeed_reads(file: Path, config: dict) -> set[str]:
    """The top-level keys DeepSpeed's config parser reads from this config. The parser has no list of
    its keys (an unknown one is ignored), so it runs on a dict that records each key asked for."""
    from deepspeed.runtime.config import DeepSpeedConfig, DeepSpeedConfigError, _reject_removed_config_keys

    asked: set[str] = set()

    class Recording(dict):
        def get(self, key, *default):
            asked.add(key)
            return super().get(key, *default)

        def __getitem__(self, key):
            asked.add(key)
            return super().__getitem__(key)

        def __contains__(self, key):
            asked.add(key)
            return super().__contains__(key)

        def keys(self):
            return RecordingKeys(self)

    class RecordingKeys:
        def __init__(self, of: dict):
            self.of = of

        def __contains__(self, key):
            asked.add(key)
            return dict.__contains__(self.of, key)

        def __iter__(self):
            return iter(dict.keys(self.of))

        def __len__(self):
            return dict.__len__(self.of)

    try:
        _reject_removed_config_keys(config)
        parser = DeepSpeedConfig.__new__(DeepSpeedConfig)
        parser._initialize_params(Recording(config))
    except DeepSpeedConfigError as exc:
        raise UserError(f"{file}: {exc}") from None
    except (ValueError, TypeError, AssertionError) as exc:  # pydantic's ValidationError is a ValueError
        first = str(exc).strip().splitlines()
        raise UserError(f"{file}: DeepSpeed refuses it: {' '.join(first[:3])}") from None
    return asked
