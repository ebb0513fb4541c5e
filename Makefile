# `make demo` and `make test` each create .venv when missing, install, and run.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test lint install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# A CPU build of torch first (the test extra's cross-checks against HF/PEFT need it);
	# an open range would pull a multi-GB CUDA build.
	$(BIN)/pip install -q '$(TORCH_SPEC)'
	$(BIN)/pip install -q -e '.[data,test]'
	touch $(STAMP)

install: $(STAMP)

DEMO_DIR ?= demo_out/synthetic_prompt

demo: $(STAMP)
	$(BIN)/spot-jax train --gin_file=demo/synthetic_prompt.gin --gin.MODEL_DIR=$(DEMO_DIR)
	@echo "Outputs in $(DEMO_DIR): config.gin, metrics.jsonl, checkpoints/ (Orbax),"
	@echo "numpy_checkpoints/checkpoint_<step>/encoder.prompt.prompt.prompt (the prompts)"

lint: $(STAMP)
	$(BIN)/ruff format --check spot_jax tools tests
	$(BIN)/ruff check spot_jax tools tests

test: $(STAMP) lint
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf $(VENV) demo_out
