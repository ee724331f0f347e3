"""Starting weights: mismatches fail with the fields named; suspicious numbers become warnings."""

import math

import pytest
from transformers import AutoModelForCausalLM, GPT2Config

from slm.errors import UserError
from slm.init_checks import (
    check_architecture,
    check_tied,
    check_vocab,
    count_parameters,
    init_loss_warning,
    tokens_per_parameter_warning,
)


def test_architecture_mismatch_names_every_field():
    actual = {"model_type": "gpt2", "n_layer": 2, "n_embd": 32}
    check_architecture({"model_type": "gpt2", "n_layer": 2}, actual, "x")
    with pytest.raises(UserError) as err:
        check_architecture({"model_type": "llama", "n_layer": 4, "n_embd": 32}, actual, "pretrain model.init /m")
    message = str(err.value)
    assert "model_type: config says 'llama', checkpoint has 'gpt2'" in message
    assert "n_layer: config says 4, checkpoint has 2" in message and "n_embd" not in message


def test_tokenizer_larger_than_the_vocab_is_refused():
    check_vocab(512, 512, "x")
    with pytest.raises(UserError, match="tokenizer has 600 tokens but the model's vocab_size is 512"):
        check_vocab(512, 600, "x")


def test_tied_embeddings_stay_tied_through_safetensors(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir(60))
    assert model.config.tie_word_embeddings and check_tied(model, "x")
    model.lm_head.weight = type(model.lm_head.weight)(model.lm_head.weight.detach().clone())
    with pytest.raises(UserError, match="loaded as separate tensors"):
        check_tied(model, "x")


def test_init_loss_near_random_is_a_warning():
    vocab = 512
    assert init_loss_warning(0.5 * math.log(vocab), vocab, "champion:x") is None
    assert "may not have loaded" in init_loss_warning(math.log(vocab) - 0.1, vocab, "champion:x")
    assert init_loss_warning(math.log(vocab), vocab, "scratch") is None  # random init is expected there


def test_tokens_per_parameter():
    params = count_parameters(GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=768))
    assert params == sum(
        p.numel()
        for p in AutoModelForCausalLM.from_config(
            GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=768)
        ).parameters()
    )
    assert "far below the ~20" in tokens_per_parameter_warning(10_000, params)
    assert tokens_per_parameter_warning(20 * params, params) is None
