# The two commands of the README's quick start. Both create .venv with Python 3.11 when it is missing.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: run test bench

$(BIN)/lstmkit: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

run: $(BIN)/lstmkit          ## set up, then run the main job
	$(BIN)/lstmkit train

test: $(BIN)/lstmkit         ## set up, then run the tests
	$(BIN)/python -m pytest -m "not slow"

DATA ?= ../shared/data/tinyshakespeare.txt

bench: $(BIN)/lstmkit        ## regenerate every section of BENCHMARKS.md and benchmarks/*.json (about 85 min)
	for study in engine fusion structures compress forecast layer-norm; do $(BIN)/lstmkit bench --study $$study --out benchmarks || exit 1; done
	$(BIN)/lstmkit bench --precision bf16 --out benchmarks
	$(BIN)/lstmkit bench --precision int8 --out benchmarks
	for study in quality precision; do $(BIN)/lstmkit bench --study $$study --data $(DATA) --out benchmarks || exit 1; done
