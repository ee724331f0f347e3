"""What the card's machine-readable metadata claims, checked as huggingface_hub reads it."""
from huggingface_hub import ModelCard

from orchestration.card import eval_results, validated

SCORES = {"mmlu": {"acc": 0.3125, "se": 0.04, "n": 120, "domains": {}, "subjects": {}},
          "bench": {"passed": 45, "total": 106, "score": 45 / 106, "categories": {}},
          "extra": {"gsm8k_zeroshot": {"exact_match,strict-match": 0.02, "exact_match_stderr,strict-match": 0.004}}}


def card_text(results):
    from huggingface_hub import ModelCardData

    data = ModelCardData(model_name="m", eval_results=results)
    return f"---\n{data.to_yaml()}\n---\nbody\n"


def test_a_subset_is_named_so_and_every_benchmark_is_listed():
    subset = eval_results({"scores": SCORES, "sweep_note": "… 120 test items — a subset, not full MMLU."})
    assert [r.dataset_type for r in subset] == ["cais/mmlu", "truth-list-bench", "gsm8k_zeroshot"]
    assert subset[0].dataset_name == "MMLU (subset: 120 items, not full MMLU)" and subset[0].dataset_split == "test"
    assert subset[1].metric_value == round(45 / 106, 4) and subset[2].metric_value == 0.02  # stderr left out
    full = eval_results({"scores": SCORES, "sweep_note": "… all 57 subjects: 14,042 test items."})
    assert full[0].dataset_name == "MMLU" and full[0].dataset_config == "all"


def test_the_card_is_parsed_back_by_huggingface_hub():
    results = eval_results({"scores": SCORES, "sweep_note": "full"})
    text = validated(card_text(results), results)
    assert len(ModelCard(text).data.eval_results) == 3
    try:
        validated(card_text(results[:1]), results)
    except ValueError as exc:
        assert "did not survive" in str(exc)
    else:
        raise AssertionError("a card missing a benchmark was accepted")


def test_a_line_grown_from_a_hub_model_names_it_as_base_model():
    from huggingface_hub import ModelCardData

    from orchestration.card import hub_base

    first = {"precursor": {"key": None, "spec": "hf:HuggingFaceTB/SmolLM2-135M-Instruct@main"}}
    base = hub_base([first, {"precursor": {"key": "champions/l/v1-sft"}}])
    assert base == {"base_model": "HuggingFaceTB/SmolLM2-135M-Instruct", "base_model_relation": "finetune"}
    assert ModelCardData(**base).to_dict()["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert hub_base([{"precursor": {"key": None, "spec": "artifacts/real/smollm2-135m"}}]) == {}
    assert hub_base([{"precursor": None}]) == {}
