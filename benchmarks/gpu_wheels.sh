#!/usr/bin/env bash
# The wheels benchmarks/gpu_check.py needs on a lent GPU machine that has torch, transformers,
# accelerate and peft but no network: DeepSpeed and pydantic (the engine), datasets and TRL (packing),
# lm-eval (the sweep's scoring), each with what it needs that the machine lacks. Versions are the
# ones requirements/lock-cpu.txt tests; binary wheels are for CPython 3.12 on x86-64 (the machine's
# Python). Source-only packages (DeepSpeed, rouge-score, sqlitedict, word2number) are built here into
# pure-Python wheels. Output: .whl/ (git-ignored), about 16 MB.
#
#   bash benchmarks/gpu_wheels.sh
# then on the device, in the repository root, with .whl carried:
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
#     .whl/*.whl && PYTHONPATH=/tmp/site:. python3 benchmarks/gpu_check.py
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl && mkdir -p .whl
PIP="${PIP:-.venv/bin/pip}"
BINARY=(pydantic_core==2.50.4)
PURE=(
  pydantic==2.14.3 annotated-types==0.8.0 typing-inspection==0.4.5 hjson==3.1.0
  datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 trl==1.16.0
  lm_eval==0.4.13 evaluate==0.4.6 pytablewriter==1.2.1 DataProperty==1.1.1 mbstrdecoder==1.1.5
  pathvalidate==3.3.1 tabledata==1.3.5 tcolorpy==0.1.7 typepy==1.3.5 chardet==6.0.0.post1
  nltk==3.10.4 more-itertools==11.2.1
)
FROM_SOURCE=(deepspeed==0.19.8 rouge_score==0.1.2 sqlitedict==2.1.0 word2number==1.1)
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
"$PIP" download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${PLATFORMS[@]}" \
  -d .whl "${BINARY[@]}"
"$PIP" download -q --no-deps --only-binary=:all: --python-version 3.12 -d .whl "${PURE[@]}"
DS_BUILD_OPS=0 "$PIP" wheel -q --no-deps --no-build-isolation -w .whl "${FROM_SOURCE[@]}"
du -sh .whl && ls .whl | wc -l
