"""SFT: instruction/answer pairs in chat form (loss on the assistant turn only, at train time)."""
from data_builders.common import build_chat

VERSION = "1"


def build(cfg, store, digest):
    return build_chat(cfg, store, VERSION, digest)
