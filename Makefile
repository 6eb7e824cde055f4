# The two commands: `make demo` (train on the embedded digits data) and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test bench bench-quality clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	@touch $@

demo: $(STAMP)
	$(VENV)/bin/pyro-vae train examples/configs/digits.yaml --out runs/demo --overwrite

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) -m benchmarks

bench-quality: $(STAMP)
	$(PY) -m benchmarks.quality

clean:
	rm -rf runs .pytest_cache
