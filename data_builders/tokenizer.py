"""Train a small byte-level BPE tokenizer (for models built from scratch) and store it as a HF tokenizer.

Special tokens: <|endoftext|> is bos and eos, <|pad|> pads (pad ≠ eos, so eos stays in the labels).
The chat template is the project's default (slm.chat.DEFAULT_CHAT_TEMPLATE).
"""

import tempfile
from pathlib import Path

from slm.chat import DEFAULT_CHAT_TEMPLATE
from slm.data_builders.sources import Source
from slm.errors import UserError
from slm.store import sha256_file

VERSION = "1"
SPECIALS = ["<|endoftext|>", "<|pad|>"]


def train_tokenizer(files: list[Path], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train([str(f) for f in files], trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token=SPECIALS[0], eos_token=SPECIALS[0], pad_token=SPECIALS[1], unk_token=None
    )
    tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    return tokenizer


def build(cfg, store, digest, evals=None, config_path=""):
    if not cfg.vocab_size:
        raise UserError("tokenizer builder: set vocab_size")
    if any(i.path is None for i in cfg.inputs):
        raise UserError(f"{config_path}: the tokenizer builder trains on local text files (`path`)")
    files = [f for i in cfg.inputs for f in Source(i, store, config_path).files()]
    tokenizer = train_tokenizer(files, cfg.vocab_size)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        manifest = store.put_tree(
            Path(tmp),
            cfg.output,
            meta={
                "builder": "tokenizer",
                "builder_version": VERSION,
                "build_digest": digest,
                "vocab_size": len(tokenizer),
                "sources": [{"path": str(f), "sha256": sha256_file(f)} for f in files],
            },
        )
    return manifest
