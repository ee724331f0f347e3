"""A planted secret fed through every entry point's error paths (a store URL with credentials, an S3
endpoint with user-info or a token in its query, a model reference with credentials) never appears in
what the command prints, in the store, or in the cache; each is refused as one redacted line."""

from __future__ import annotations

import pytest

from tests.launch.test_bad_inputs import LAUNCH, run_entry

SECRET = "PLANTEDs3cr3tXYZ"
CARRIERS = {
    "store-url-userinfo": ({"store": f"s3://AKIAPLANTED:{SECRET}@bucket/p"}, "credentials in an s3:// URL"),
    "endpoint-userinfo": (
        {"store": "s3://bucket/p", "AWS_ENDPOINT_URL": f"http://key:{SECRET}@127.0.0.1:9"},
        "<redacted>",
    ),
    "endpoint-query-token": (
        {"store": "s3://bucket/p", "AWS_ENDPOINT_URL": f"http://127.0.0.1:9/?token={SECRET}"},
        "<redacted>",
    ),
    "endpoint-not-a-url": ({"store": "s3://bucket/p", "AWS_ENDPOINT_URL": f"notaurl{SECRET}"}, "S3"),
}


def entry_points(store: str, tmp) -> dict[str, list[str]]:
    return {
        "stage-dry-run": ["stage.py", "sft", "--store", store, "--dry-run"],
        "stage-print-config": ["stage.py", "sft", "--set", f"store={store}", "--print-config"],
        "stage-run": ["stage.py", "sft", "--store", store],
        "pipeline-dry-run": ["pipeline.py", "--store", store, "--dry-run"],
        "evaluate": ["evaluate.py", "champion:some-line", "--store", store],
        "promote": ["promote.py", "runs/sft/sft-0123456789abcdef", "--store", store],
        "rollback": ["promote.py", "--rollback", "v1-sft", "--reason", "r", "--store", store],
        "card": ["card.py", "--store", store, "--line", "some-line"],
        "build-data": ["build_data.py", "repair", "--store", store],
    }


@pytest.mark.parametrize("carrier", CARRIERS)
@pytest.mark.parametrize(
    "entry",
    [
        "stage-dry-run",
        "stage-print-config",
        "stage-run",
        "pipeline-dry-run",
        "evaluate",
        "promote",
        "rollback",
        "card",
        "build-data",
    ],
)
def test_a_planted_secret_never_leaks(entry, carrier, tmp_path, monkeypatch, capsys):
    import ray

    from slm import cluster

    def no_ray(*args, **kwargs):
        raise AssertionError("a Ray cluster was started")

    monkeypatch.setattr(cluster, "connect", no_ray)
    monkeypatch.setattr(ray, "init", no_ray)
    settings, expect = CARRIERS[carrier]
    for key in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    if "AWS_ENDPOINT_URL" in settings:
        monkeypatch.setenv("AWS_ENDPOINT_URL", settings["AWS_ENDPOINT_URL"])
    monkeypatch.setenv("SLM_CACHE", str(tmp_path / "cache"))
    monkeypatch.syspath_prepend(str(LAUNCH))
    argv = entry_points(settings["store"], tmp_path)[entry]
    capsys.readouterr()
    code = run_entry(argv)
    out, err = capsys.readouterr()
    assert code == 2, (code, err[-2000:])
    assert SECRET not in out + err, (out + err)[-2000:]
    assert "Traceback" not in err, err[-2000:]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expect in errors[0], err[-2000:]
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_a_model_reference_with_credentials_is_refused_redacted(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SLM_CACHE", str(tmp_path / "cache"))
    monkeypatch.syspath_prepend(str(LAUNCH))
    store = tmp_path / "store"
    argv = [
        "stage.py",
        "sft",
        "--store",
        str(store),
        "--set",
        f"sft.model.init=s3://KEY:{SECRET}@bucket/m",
        "--dry-run",
    ]
    code = run_entry(argv)
    out, err = capsys.readouterr()
    assert code == 2 and SECRET not in out + err and "credentials in an s3:// URL" in err, err[-2000:]
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
