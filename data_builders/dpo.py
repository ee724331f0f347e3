"""DPO: preference pairs (a prompt, the preferred answer, the dispreferred one) in TRL's conversational form."""
import random

from data_builders.common import read_jsonl, split_and_write
from slm.config import resolve_path
from slm.errors import UserError
from slm.store import sha256_file

VERSION = "1"


def to_pair(row: dict, where: str) -> dict:
    fields = {}
    for name in ("prompt", "chosen", "rejected"):
        value = row.get(name)
        if not isinstance(value, str) or not value.strip():
            raise UserError(f"{where}: `{name}` must be a non-empty string")
        fields[name] = value
    if fields["chosen"].strip() == fields["rejected"].strip():
        raise UserError(f"{where}: `chosen` and `rejected` are the same answer")
    return {"prompt": [{"role": "user", "content": fields["prompt"]}],
            "chosen": [{"role": "assistant", "content": fields["chosen"]}],
            "rejected": [{"role": "assistant", "content": fields["rejected"]}]}


def build(cfg, store, digest):
    rows, sources = [], []
    for item in cfg.inputs:
        path = resolve_path(item.path)
        pairs = [{**to_pair(row, f"{path}:{n}"), "source": item.name or path.stem} for n, row in read_jsonl(item.path)]
        rows += pairs * int(item.weight) + random.Random(cfg.seed).sample(pairs, round((item.weight % 1) * len(pairs)))
        sources.append({"name": item.name or path.stem, "path": item.path, "sha256": sha256_file(path),
                        "weight": item.weight, "rows_in": len(pairs)})
    return split_and_write(cfg, store, rows, sources, VERSION, digest)
