"""DPO: preference pairs (a prompt, the preferred answer, the dispreferred one) in TRL's conversational form."""

from slm.data_builders.common import build_rows
from slm.errors import UserError

VERSION = "2"  # 2: any source kind (JSONL, Parquet, hub, S3); deduplicated and decontaminated


def to_pair(row: dict, where: str) -> dict:
    fields = {}
    for name in ("prompt", "chosen", "rejected"):
        value = row.get(name)
        if not isinstance(value, str) or not value.strip():
            raise UserError(f"{where}: `{name}` must be a non-empty string")
        fields[name] = value
    if fields["chosen"].strip() == fields["rejected"].strip():
        raise UserError(f"{where}: `chosen` and `rejected` are the same answer")
    return {
        "prompt": [{"role": "user", "content": fields["prompt"]}],
        "chosen": [{"role": "assistant", "content": fields["chosen"]}],
        "rejected": [{"role": "assistant", "content": fields["rejected"]}],
    }


def pairs(source):
    for row in source.rows():
        yield row.where, to_pair(row.data, row.where)


def build(cfg, store, digest, evals=None, config_path=""):
    return build_rows(cfg, store, evals, config_path, VERSION, digest, reader=pairs)
