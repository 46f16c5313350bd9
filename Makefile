# One-command entry points; see README.md.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OFFLINE := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
LIMIT ?= 40

.PHONY: setup assets bench test benchmarks clean

$(BIN)/spec-agent: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[test]'
	touch $@

setup: $(BIN)/spec-agent

assets: setup
	$(OFFLINE) $(BIN)/spec-agent assets fetch

bench: assets
	$(OFFLINE) $(BIN)/spec-agent bench --limit $(LIMIT)

test: assets
	$(OFFLINE) OMP_NUM_THREADS=1 $(BIN)/pytest tests

benchmarks: assets
	$(OFFLINE) $(BIN)/pytest benchmarks -s --benchmark-columns=mean,rounds

clean:
	rm -rf $(VENV) build dist *.egg-info
