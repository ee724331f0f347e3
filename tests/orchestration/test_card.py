"""What the card's machine-readable metadata claims, checked as huggingface_hub reads it."""

from huggingface_hub import ModelCard

from slm.eval.scores import Scores
from slm.orchestration.card import eval_results, validated

SCORES = {
    "mmlu": {"acc": 0.3125, "se": 0.04, "n": 120, "domains": {}, "subjects": {}},
    "bench": {"passed": 45, "total": 106, "score": 45 / 106, "categories": {}},
    "extra": {"gsm8k_zeroshot": {"exact_match,strict-match": 0.02, "exact_match_stderr,strict-match": 0.004}},
}


def card_text(results):
    from huggingface_hub import ModelCardData

    data = ModelCardData(model_name="m", eval_results=results)
    return f"---\n{data.to_yaml()}\n---\nbody\n"


def test_a_subset_is_named_so_and_every_benchmark_is_listed():
    subset = eval_results(Scores.model_validate(SCORES), "… 120 test items — a subset, not full MMLU.")
    assert [r.dataset_type for r in subset] == ["cais/mmlu", "truth-list-bench", "gsm8k_zeroshot"]
    assert subset[0].dataset_name == "MMLU (subset: 120 items, not full MMLU)" and subset[0].dataset_split == "test"
    assert subset[1].metric_value == round(45 / 106, 4) and subset[2].metric_value == 0.02  # stderr left out
    full = eval_results(Scores.model_validate(SCORES), "… all 57 subjects: 14,042 test items.")
    assert full[0].dataset_name == "MMLU" and full[0].dataset_config == "all"


def test_the_card_is_parsed_back_by_huggingface_hub():
    results = eval_results(Scores.model_validate(SCORES), "full")
    text = validated(card_text(results), results)
    assert len(ModelCard(text).data.eval_results) == 3
    try:
        validated(card_text(results[:1]), results)
    except ValueError as exc:
        assert "did not survive" in str(exc)
    else:
        raise AssertionError("a card missing a benchmark was accepted")


def test_a_line_grown_from_a_hub_model_names_it_as_base_model(tmp_path):
    from huggingface_hub import ModelCardData

    from slm.orchestration.card import card_license, hub_base

    # the spec is the line's first champion's input model (what the card passes)
    first = "hf:HuggingFaceTB/SmolLM2-135M-Instruct@main"
    base = hub_base(first)
    assert base == {"base_model": "HuggingFaceTB/SmolLM2-135M-Instruct", "base_model_relation": "finetune"}
    assert ModelCardData(**base).to_dict()["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    # a first champion that is a SLERP with the base itself is a merge of it
    assert hub_base(first, merged=True)["base_model_relation"] == "merge"
    bare = tmp_path / "bare-model"
    bare.mkdir()
    assert hub_base(str(bare)) == {}
    assert hub_base(None) == {}
    # a hub model not in the local cache: its licence is unknown, and the card says so
    uncached = "hf:example-org/never-downloaded"
    assert card_license(uncached, None) == (
        "other",
        "unknown: the base model (hf:example-org/never-downloaded) has no readable card; set card.license",
    )


def test_a_local_base_lends_its_card_base_model_and_licence(tmp_path):
    """What launch/convert_gguf.py writes beside converted weights is read back for the champions' cards."""
    from huggingface_hub import ModelCard, ModelCardData

    from slm.orchestration.card import card_license, hub_base

    model = tmp_path / "converted"
    model.mkdir()
    data = ModelCardData(license="llama3.2", base_model="meta-llama/Llama-3.2-1B-Instruct")
    (model / "README.md").write_text(ModelCard(f"---\n{data.to_yaml()}\n---\n# converted\n").content)
    start = str(model)  # the line's first input model
    assert hub_base(start) == {"base_model": "meta-llama/Llama-3.2-1B-Instruct", "base_model_relation": "finetune"}
    assert card_license(start, None) == ("llama3.2", f"the base model's card ({model})")
    assert card_license(start, "mit")[0] == "mit"  # card.license, when set, wins
    assert card_license(None, None)[0] == "apache-2.0"  # trained from scratch: ours


def test_the_convert_tool_writes_a_card_the_champions_can_read(tmp_path):
    import importlib

    from huggingface_hub import ModelCard

    convert = importlib.import_module("slm.launch.convert_gguf")
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    text = convert.provenance_card(gguf, {"name": "Tiny", "license": "apache-2.0"}, "org/tiny", None)
    card = ModelCard(text)
    assert card.data.license == "apache-2.0" and card.data.base_model == "org/tiny"
    assert "sha256" in text and "| license | apache-2.0 |" in text
    unknown = ModelCard(convert.provenance_card(gguf, {"name": "Tiny"}, None, None))
    assert unknown.data.license == "other" and unknown.data.base_model is None
