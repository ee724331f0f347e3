from slm.records import redact, versions


def test_secrets_never_reach_records():
    record = {
        "hf_token": "abc",
        "aws_secret_access_key": "s",
        "nested": [{"api_key": "k"}],
        "store": "s3://user:pass@host/bucket",
        "tokens_per_s": 10.0,
        "tokenizer": {"spec": "x"},
    }
    out = redact(record)
    assert out["hf_token"] == out["aws_secret_access_key"] == out["nested"][0]["api_key"] == "<redacted>"
    assert out["store"] == "s3://<redacted>@host/bucket"
    assert out["tokens_per_s"] == 10.0 and out["tokenizer"] == {"spec": "x"}


def test_versions_name_the_stack():
    v = versions()
    assert v["torch"].startswith("2.13.0") and v["deepspeed"] and v["ray"] and v["transformers"]
