# Two entry points, each working on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DB ?= .demo-library

.PHONY: demo test

$(BIN)/clipsearch: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: $(BIN)/clipsearch
	$(BIN)/clipsearch index sample_data/shapes --model clipsearch-tiny --db $(DEMO_DB)
	$(BIN)/clipsearch search "a red star" --db $(DEMO_DB) -n 3
	$(BIN)/clipsearch search "a blue circle" --db $(DEMO_DB) -n 3
	$(BIN)/clipsearch search "a yellow triangle" --db $(DEMO_DB) -n 3
	$(BIN)/clipsearch search "红色的星星" --db $(DEMO_DB) -n 3
	$(BIN)/clipsearch search "a green shape" --sub "a square" --db $(DEMO_DB) -n 3
	@echo "Next: source .venv/bin/activate, then try the examples in README.md, e.g. clipsearch info --db $(DEMO_DB)"

test: $(BIN)/clipsearch
	$(BIN)/python -m pytest -q
