"""Model references resolve or fail with one line naming what is missing; nothing falls back silently."""

import os
import shutil

import pytest
import torch

from slm.errors import UserError
from slm.modeling import load_model, resolve_ref, scratch_config
from slm.store import Store


def test_local_model_dir_resolves_and_loads(tiny_model_dir, tmp_path):
    path = tiny_model_dir(0)
    ref = resolve_ref(str(path), Store.open(str(tmp_path)))
    assert ref.materialize() == path
    assert load_model(path).config.model_type == "gpt2"


def test_missing_dir_and_missing_weights_and_tokenizer(tiny_model_dir, tmp_path):
    store = Store.open(str(tmp_path / "s"))
    with pytest.raises(UserError, match="no such directory"):
        resolve_ref(str(tmp_path / "nope"), store)
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir(0), pickled)
    (pickled / "model.safetensors").unlink()
    torch.save({}, pickled / "pytorch_model.bin")
    with pytest.raises(UserError, match=r"no \*\.safetensors weights .*pytorch_model.bin"):
        resolve_ref(str(pickled), store)
    no_tok = tmp_path / "notok"
    shutil.copytree(tiny_model_dir(0), no_tok)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (no_tok / f).unlink()
    with pytest.raises(UserError, match="no tokenizer files"):
        resolve_ref(str(no_tok), store)


def test_store_and_champion_refs(tiny_model_dir, tmp_path):
    store = Store.open(str(tmp_path / "s"))
    with pytest.raises(UserError, match="no champion promoted yet for line 'ff'"):
        resolve_ref("champion:ff", store)
    with pytest.raises(UserError, match="not found \\(or incomplete\\)"):
        resolve_ref("store:models/x", store)
    store.put_tree(tiny_model_dir(0), "models/x")
    ref = resolve_ref("store:models/x", store)
    assert (ref.materialize() / "model.safetensors").is_file()


def test_hub_reference_offline_is_one_clear_line():
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    ref = resolve_ref("hf:Qwen/Qwen2.5-0.5B", Store.open("/tmp"))
    with pytest.raises(
        UserError, match="cannot fetch hf:Qwen/Qwen2.5-0.5B from the Hugging Face hub \\(HF_HUB_OFFLINE"
    ):
        ref.materialize()


def test_scratch_architecture_rejects_unknown_keys_and_short_context(tiny_tokenizer):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer)
    config = scratch_config(
        {
            "model_type": "llama",
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "intermediate_size": 128,
        },
        tok,
        128,
    )
    assert config.vocab_size == len(tok) and config.pad_token_id == tok.pad_token_id
    with pytest.raises(UserError, match="unknown key\\(s\\) for gpt2: n_layers"):
        scratch_config({"model_type": "gpt2", "n_layers": 2}, tok, 128)
    with pytest.raises(UserError, match="context of 64 tokens is shorter than data.max_length 128"):
        scratch_config({"model_type": "gpt2", "n_positions": 64}, tok, 128)
    with pytest.raises(UserError, match="unknown model type"):
        scratch_config({"model_type": "gpt9"}, tok, 128)


def test_champion_of_a_stage_is_the_newest_from_that_stage(tiny_model_dir, tmp_path):
    store = Store.open(str(tmp_path / "s"))
    for version in ("v1-pretrain", "v2-sft", "v3-sft", "v4-repair"):
        store.put_tree(tiny_model_dir(0), f"champions/ff/{version}")
    assert resolve_ref("champion:ff:sft", store).key == "champions/ff/v3-sft"
    assert resolve_ref("champion:ff@v2-sft", store).key == "champions/ff/v2-sft"
    with pytest.raises(UserError, match="no champion promoted yet from stage 'distill' of line 'ff'"):
        resolve_ref("champion:ff:distill", store)


def test_a_stated_vocabulary_is_honoured_when_it_holds_the_tokenizer_and_refused_when_smaller(tiny_tokenizer):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer)
    padded = scratch_config({"model_type": "gpt2", "n_layer": 1, "vocab_size": 576}, tok, 128)
    assert padded.vocab_size == 576 > len(tok) and padded.eos_token_id == tok.eos_token_id
    with pytest.raises(UserError, match=rf"vocab_size 100 is smaller than the tokenizer's {len(tok)} tokens"):
        scratch_config({"model_type": "gpt2", "vocab_size": 100}, tok, 128)
    planned = scratch_config({"model_type": "gpt2", "vocab_size": 50257}, None, 128)  # a plan: as stated
    assert planned.vocab_size == 50257 and planned.eos_token_id is None
