"""SFT: instruction/answer pairs in chat form (loss on the assistant turn only, at train time)."""

from slm.data_builders.common import build_chat

VERSION = "2"  # 2: any source kind and row format; deduplicated and decontaminated


def build(cfg, store, digest, evals=None, config_path=""):
    return build_chat(cfg, store, evals, config_path, VERSION, digest)
