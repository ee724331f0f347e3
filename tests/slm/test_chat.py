"""Assistant-only labels, and the tokenizer checks chat stages rely on."""

import pytest
from transformers import AutoTokenizer

from slm.chat import IGNORE_INDEX, check_tokenizer_for_chat, encode_chat
from slm.errors import UserError


@pytest.fixture
def tok(tiny_tokenizer):
    return AutoTokenizer.from_pretrained(tiny_tokenizer)


def labelled_text(tok, enc):
    return tok.decode([t for t, l in zip(enc["input_ids"], enc["labels"]) if l != IGNORE_INDEX])


def test_loss_only_on_assistant_tokens(tok):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
    ]
    enc = encode_chat(tok, messages, max_length=256)
    assert len(enc["input_ids"]) == len(enc["labels"])
    assert labelled_text(tok, enc) == "Paris.<|endoftext|>\n"
    full = tok.apply_chat_template(messages, tokenize=False)
    assert tok.decode(enc["input_ids"]) == full


def test_multi_turn_labels_every_assistant_turn_and_truncates(tok):
    messages = [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "3+3?"},
        {"role": "assistant", "content": "6"},
    ]
    enc = encode_chat(tok, messages, max_length=256)
    assert labelled_text(tok, enc) == "4<|endoftext|>\n6<|endoftext|>\n"
    short = encode_chat(tok, messages, max_length=5)
    assert len(short["input_ids"]) == 5


def test_pad_equal_to_eos_still_labels_eos(tok):
    """Labels are built explicitly and padded with -100, so a pad that is eos would not mask eos here;
    chat stages route pad to a distinct token anyway (tests/slm/test_padding.py)."""
    check_tokenizer_for_chat(tok, "here")
    tok.pad_token = tok.eos_token
    check_tokenizer_for_chat(tok, "here")
    enc = encode_chat(tok, [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}], 256)
    assert tok.eos_token_id in [t for t, lab in zip(enc["input_ids"], enc["labels"]) if lab != IGNORE_INDEX]


def test_missing_template_is_named(tiny_tokenizer):
    tok = AutoTokenizer.from_pretrained(tiny_tokenizer)
    tok.chat_template = None
    with pytest.raises(UserError, match="no chat template; set model.chat_template"):
        check_tokenizer_for_chat(tok, "sft model x")
