# The two commands: `make demo` (train on the embedded digits data) and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test bench bench-quality bench-quality-bg clean

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

# The published Fashion-MNIST protocol (hours; resumes from its run directories in STATE).
STATE   ?= $(HOME)/.cache/pyro-vae/bench-quality
THREADS ?= 2
bench-quality: $(STAMP)
	OMP_NUM_THREADS=$(THREADS) $(PY) -m benchmarks.quality --threads $(THREADS) --state $(STATE)

# The same in the background from a snapshot of HEAD in STATE/code (edits to the work tree
# cannot reach the running job), appending to STATE/log; its process id goes to STATE/pid.
bench-quality-bg: $(STAMP)
	@if [ -f $(STATE)/pid ] && kill -0 $$(cat $(STATE)/pid) 2>/dev/null; then \
		echo "already running: pid $$(cat $(STATE)/pid)"; exit 1; fi
	rm -rf $(STATE)/code && mkdir -p $(STATE)/code && git archive HEAD | tar -x -C $(STATE)/code
	cd $(STATE)/code && OMP_NUM_THREADS=$(THREADS) setsid nohup $(abspath $(PY)) \
		-m benchmarks.quality --threads $(THREADS) --state $(STATE) \
		--results $(abspath benchmarks/results) --out $(abspath BENCHMARKS.md) \
		>> $(STATE)/log 2>&1 < /dev/null & echo $$! > $(STATE)/pid
	@echo "started: pid $$(cat $(STATE)/pid), code $$(git rev-parse --short HEAD), log $(STATE)/log"

clean:
	rm -rf runs .pytest_cache
