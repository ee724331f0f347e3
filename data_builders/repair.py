"""Knowledge repair: blocks of MMLU-style MCQ, concise facts and numeric micro-reasoning.

Every input is a named block; the manifest records each block's rows, and `validation_fraction`
holds out a validation split that the stage evaluates at every checkpoint.
"""
from data_builders.common import build_chat

VERSION = "1"


def build(cfg, store, digest):
    return build_chat(cfg, store, VERSION, digest)
