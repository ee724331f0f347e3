"""Knowledge repair: blocks of MMLU-style MCQ, concise facts and numeric micro-reasoning.

Every input is a named block; the manifest records each block's rows, and `validation_fraction`
holds out a validation split that the stage evaluates at every checkpoint.
"""

from slm.data_builders.common import build_chat

VERSION = "2"  # 2: any source kind and row format; deduplicated and decontaminated


def build(cfg, store, digest, evals=None, config_path=""):
    return build_chat(cfg, store, evals, config_path, VERSION, digest)
