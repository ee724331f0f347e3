"""Shared fixtures: offline Hugging Face, a real S3 server, a local Ray cluster, tiny models."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import pytest

from tests.support.seaweed import SeaweedS3


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    server = SeaweedS3(tmp_path_factory.mktemp("seaweed"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """AWS_* variables pointing at the test server, and a fresh bucket; returns the bucket URI."""
    import uuid

    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    bucket = f"t-{uuid.uuid4().hex[:12]}"
    s3_server.create_bucket(bucket)
    return f"s3://{bucket}/prefix"


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory):
    """The project's tokenizer builder run on its fixtures: a real BPE tokenizer with a chat template."""
    from slm.config import resolve_path
    from slm.data_builders.tokenizer import train_tokenizer

    files = [resolve_path(f"data_builders/fixtures/pretrain/{n}.txt") for n in ("encyclopedic", "educational", "web")]
    tokenizer = train_tokenizer(files, 512)
    path = tmp_path_factory.mktemp("tokenizer")
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer):
    """Factory: a saved tiny GPT-2 (safetensors + tokenizer) for a given seed."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config

    def make(seed: int = 0, **arch):
        tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer)
        torch.manual_seed(seed)
        config = GPT2Config(
            **{
                "n_layer": 2,
                "n_embd": 32,
                "n_head": 2,
                "n_positions": 256,
                "vocab_size": len(tokenizer),
                "pad_token_id": tokenizer.pad_token_id,
                "eos_token_id": tokenizer.eos_token_id,
                "bos_token_id": tokenizer.bos_token_id,
                **arch,
            }
        )
        model = AutoModelForCausalLM.from_config(config)
        path = tmp_path_factory.mktemp(f"model-{seed}")
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
        return path

    return make


@pytest.fixture(scope="session")
def gated_line(tmp_path_factory, tiny_model_dir):
    """A finished line (v1-sft promoted, a surgical run the gate kept out): see tests/support/gated_line.py."""
    from tests.support.gated_line import build

    old_cache = os.environ.get("SLM_CACHE")
    try:
        return build(tmp_path_factory.mktemp("gated-line"), tiny_model_dir(seed=4))
    finally:
        if old_cache is None:
            os.environ.pop("SLM_CACHE", None)
        else:
            os.environ["SLM_CACHE"] = old_cache
