"""JSONL inputs (builder inputs, benches): every malformed file is one line naming the file and line."""

import pytest

from slm.errors import UserError
from slm.jsonl import read_objects


@pytest.mark.parametrize(
    "content, message",
    [
        (b'{"a": 1}\n{"b": "caf\xe9"}\n', r"in.jsonl:2: not UTF-8 text \(byte 0xe9 at offset 19\)"),
        (b'{"a": 1}\n{oops}\n', r"in.jsonl:2: not valid JSON"),
        (b"[1, 2]\n", r"in.jsonl:1: expected a JSON object"),
    ],
)
def test_malformed_lines_are_named(tmp_path, content, message):
    path = tmp_path / "in.jsonl"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message):
        read_objects(path)


def test_a_huge_bench_prompt_is_refused_before_anything_runs(tmp_path):
    from slm.orchestration.stage import open_pipeline

    bench = tmp_path / "bench.jsonl"
    bench.write_text('{"id": "x", "category": "c", "prompt": "' + "word " * 3000 + '", "truth": ["a"]}\n')
    with pytest.raises(UserError, match=r"bench.jsonl:1: prompt of 15,000 characters; a bench prompt is at most 4,000"):
        open_pipeline("stages/pipeline.yaml", str(tmp_path / "store"), [f"sweep.bench={bench}"])
