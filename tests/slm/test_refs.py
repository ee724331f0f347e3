"""Model references: parsed once, and a resolved reference's JSON form is what run records hold."""

import pytest
from pydantic import TypeAdapter

from slm import refs
from slm.refs import HubRef, LocalRef, ModelRef, ScratchRef, StoreRef

ADAPTER = TypeAdapter(ModelRef)


@pytest.mark.parametrize(
    "text, kind, parts",
    [
        ("scratch", "scratch", {}),
        ("champion:ff", "champion", {"line": "ff", "stage": None, "version": None}),
        ("champion:ff:sft", "champion", {"line": "ff", "stage": "sft", "version": None}),
        ("champion:ff@v2-sft", "champion", {"line": "ff", "stage": None, "version": "v2-sft"}),
        ("store:/models/x/", "store", {"key": "models/x"}),
        ("s3://bucket/models/x", "s3", {}),
        ("hf:Qwen/Qwen2.5-0.5B", "hf", {"repo": "Qwen/Qwen2.5-0.5B", "revision": None}),
        ("hf:Qwen/Qwen2.5-0.5B@abc123", "hf", {"repo": "Qwen/Qwen2.5-0.5B", "revision": "abc123"}),
        ("artifacts/real/smollm2-135m", "local", {}),
    ],
)
def test_every_reference_form_parses_to_its_kind(text, kind, parts):
    spec = refs.parse(text)
    assert spec.kind == kind and spec.text == text
    assert {name: getattr(spec, name) for name in parts} == parts


@pytest.mark.parametrize(
    "stored, cls",
    [
        ({"spec": "scratch"}, ScratchRef),
        ({"spec": "store:models/x", "store": "/s", "key": "models/x"}, StoreRef),
        (
            {
                "spec": "champion:ff",
                "store": "/s",
                "key": "champions/ff/v1-sft",
                "champion": {"line": "ff", "version": "v1-sft", "key": "champions/ff/v1-sft", "stage": "sft"},
            },
            StoreRef,
        ),
        ({"spec": "s3://b/m", "store": "s3://b/m", "key": ""}, StoreRef),
        ({"spec": "models/m", "local": "/abs/models/m"}, LocalRef),
        ({"spec": "hf:org/m", "hf": "org/m", "revision": None}, HubRef),
    ],
)
def test_a_stored_reference_loads_as_its_kind_and_writes_back_the_same(stored, cls):
    ref = ADAPTER.validate_python(stored)
    assert type(ref) is cls and ref.to_json() == stored
    assert ADAPTER.validate_python(ADAPTER.dump_python(ref)) == ref  # the job's trip to a Ray worker


def test_what_a_reference_says_of_itself():
    champion = StoreRef(
        spec="champion:ff",
        store="/s",
        key="champions/ff/v1-sft",
        champion={"line": "ff", "version": "v1-sft", "key": "champions/ff/v1-sft"},
    )
    assert champion.label == "`champion:ff` (ff@v1-sft)" and champion.location == "champions/ff/v1-sft"
    assert champion.in_store("/s") and not champion.in_store("s3://other")
    assert StoreRef(spec="s3://b", store="s3://b", key="").location is None  # the root of another store
    assert LocalRef(spec="m", local="/abs/m").location == "/abs/m"
    assert HubRef(spec="hf:org/m", hf="org/m", revision=None).files_identity() == {"hf": "org/m", "revision": None}
    assert ScratchRef().files_identity() == "scratch" and ScratchRef().label == "`scratch`"
    assert ScratchRef().to_json() == {"spec": "scratch"}  # what a run from scratch records
    with pytest.raises(ValueError):
        ADAPTER.validate_python({"spec": "models/m", "local": "/m", "typo": 1})  # unknown fields refused


def test_a_hub_reference_is_pinned_to_the_commit_its_revision_resolves_to(tmp_path, monkeypatch):
    """Offline, from the local cache's refs (the layout huggingface_hub writes); a full SHA stands."""
    from huggingface_hub import constants

    from slm.modeling import resolve_ref
    from slm.store import Store

    sha = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--org--tiny"
    (repo / "snapshots" / sha).mkdir(parents=True)
    (repo / "snapshots" / sha / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    store = Store.open(str(tmp_path / "store"))
    ref = resolve_ref("hf:org/tiny", store)
    assert ref.revision is None and ref.commit == sha
    assert ref.files_identity() == {"hf": "org/tiny", "revision": None, "commit": sha}
    assert ref.to_json()["commit"] == sha  # what the run record holds
    assert resolve_ref("hf:org/elsewhere", store).commit is None  # not cached: the fetch will say so
    assert resolve_ref(f"hf:org/elsewhere@{sha}", store).commit == sha
