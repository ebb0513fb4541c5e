# `make demo` and `make test` each create .venv when missing, install, and run.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
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
