"""Pad routing on the tokenizer shapes real models ship: SmolLM2 (pad == eos), Llama-3 (no pad, reserved
tokens), Llama-3.1 (a pad token made for it), Mistral (no pad, unk), Qwen2 (distinct pad: untouched),
GPT-2 (one token for everything: a new pad, embeddings grown and still tied)."""

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from slm.chat import check_tokenizer_for_chat
from slm.errors import UserError
from slm.padding import apply_pad, fit_model_to_pad, plan_pad

WORDS = ["hello", "world", "the", "capital", "of", "france", "is", "paris"]


def tokenizer_with(specials: list[str], **roles) -> PreTrainedTokenizerFast:
    """A word-level tokenizer whose first ids are `specials`, in order (as the real ones number them)."""
    vocab = {t: i for i, t in enumerate(specials + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=roles.get("unk_token") or specials[0]))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, **roles)
    tok.add_special_tokens({"additional_special_tokens": [t for t in specials if t not in roles.values()]})
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{{ eos_token }}{% endfor %}"
    return tok


def smollm2_like():
    return tokenizer_with(
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<repo_name>"],
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )


def llama3_like(with_pad_token: bool = False):
    specials = [
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|reserved_special_token_0|>",
        "<|reserved_special_token_1|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|reserved_special_token_2|>",
        "<|eot_id|>",
    ]
    if with_pad_token:
        specials[2] = "<|finetune_right_pad_id|>"
    return tokenizer_with(specials, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")


def test_smollm2_pad_equal_to_eos_is_routed_to_its_document_end_token():
    tok = smollm2_like()
    plan = plan_pad(tok, "surgical model smollm2")
    assert plan.to_json() == {
        "content": "<|endoftext|>",
        "id": 0,
        "how": "routed",
        "reason": "the tokenizer's pad token was its eos '<|im_end|>'; routed to the unk token",
    }
    apply_pad(tok, plan)
    assert tok.pad_token_id == 0 and tok.eos_token == "<|im_end|>" and tok.eos_token_id == 2


def test_llama3_without_pad_is_routed_to_a_reserved_token_and_31_to_its_pad_token():
    plan = plan_pad(llama3_like(), "x")
    assert (plan.content, plan.id, plan.how) == ("<|reserved_special_token_0|>", 2, "routed")
    assert plan.reason.startswith("the tokenizer has no pad token")
    plan = plan_pad(llama3_like(with_pad_token=True), "x")
    assert (plan.content, plan.id) == ("<|finetune_right_pad_id|>", 2)
    assert "made for padding" in plan.reason


def test_mistral_without_pad_is_routed_to_unk():
    tok = tokenizer_with(["<unk>", "<s>", "</s>"], unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    assert plan_pad(tok, "x").content == "<unk>"


def test_qwen2_distinct_pad_is_kept_untouched():
    tok = tokenizer_with(
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    plan = plan_pad(tok, "x")
    assert plan.how == "kept" and plan.content == "<|endoftext|>"
    before = len(tok)
    apply_pad(tok, plan)
    assert len(tok) == before and tok.pad_token == "<|endoftext|>"


def test_gpt2_single_special_token_gets_a_new_pad_and_tied_embeddings_grow():
    tok = tokenizer_with(
        ["<|endoftext|>"], bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>"
    )
    plan = plan_pad(tok, "x")
    assert (plan.content, plan.how, plan.id) == ("<|pad|>", "added", len(tok))
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=len(tok)))
    apply_pad(tok, plan)
    assert tok.pad_token_id == plan.id and tok.eos_token == "<|endoftext|>"
    model = fit_model_to_pad(model, plan)
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    assert model.config.pad_token_id == plan.id == model.generation_config.pad_token_id


def test_embeddings_with_spare_rows_are_never_shrunk():
    tok = tokenizer_with(["<|endoftext|>"], eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    plan = plan_pad(tok, "x")
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=len(tok) + 64))
    fit_model_to_pad(model, plan)
    assert model.get_input_embeddings().weight.shape[0] == len(tok) + 64


def test_a_tokenizer_changed_under_the_run_is_named():
    plan = plan_pad(smollm2_like(), "x")
    other = tokenizer_with(
        ["<|im_start|>", "<|endoftext|>", "<|im_end|>"], eos_token="<|im_end|>", unk_token="<|endoftext|>"
    )
    with pytest.raises(UserError, match="has id 1 here but 0 when the run was planned"):
        apply_pad(other, plan)


def test_no_eos_is_the_one_refusal_and_pad_is_no_longer_required_for_chat():
    tok = tokenizer_with(["<unk>", "<s>"], unk_token="<unk>", bos_token="<s>")
    with pytest.raises(UserError, match="surgical model m: tokenizer has no eos token"):
        plan_pad(tok, "surgical model m")
    check_tokenizer_for_chat(smollm2_like(), "sft model x")  # pad == eos: routed, not refused
