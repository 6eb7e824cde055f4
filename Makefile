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
# MODELS=vamp or MODELS=hvae,iwae-dreg trains only those (default: all, one after another), so
# two jobs can share the table, one per core; each run directory is locked by the job training it.
STATE   ?= $(HOME)/.cache/pyro-vae/bench-quality
THREADS ?= 2
MODELS  ?=
comma   := ,
JOB      = $(if $(MODELS),-$(subst $(comma),+,$(MODELS)))
bench-quality: $(STAMP)
	OMP_NUM_THREADS=$(THREADS) $(PY) -m benchmarks.quality --threads $(THREADS) --state $(STATE) \
		$(if $(MODELS),--models $(MODELS))

# The same in the background from a snapshot of HEAD in STATE/code$(JOB) (edits to the work tree
# cannot reach the running job), appending to STATE/log$(JOB); its process id goes to
# STATE/pid$(JOB), where JOB is empty or -<models> (MODELS=hvae,iwae-dreg: -hvae+iwae-dreg).
bench-quality-bg: $(STAMP)
	@if [ -f $(STATE)/pid$(JOB) ] && kill -0 $$(cat $(STATE)/pid$(JOB)) 2>/dev/null; then \
		echo "already running: pid $$(cat $(STATE)/pid$(JOB))"; exit 1; fi
	rm -rf $(STATE)/code$(JOB) && mkdir -p $(STATE)/code$(JOB) && \
		git archive HEAD | tar -x -C $(STATE)/code$(JOB)
	cd $(STATE)/code$(JOB) && OMP_NUM_THREADS=$(THREADS) setsid nohup $(abspath $(PY)) \
		-m benchmarks.quality --threads $(THREADS) --state $(STATE) $(if $(MODELS),--models $(MODELS)) \
		--results $(abspath benchmarks/results) --out $(abspath BENCHMARKS.md) \
		>> $(STATE)/log$(JOB) 2>&1 < /dev/null & echo $$! > $(STATE)/pid$(JOB)
	@echo "started: pid $$(cat $(STATE)/pid$(JOB)), code $$(git rev-parse --short HEAD), log $(STATE)/log$(JOB)"

clean:
	rm -rf runs .pytest_cache
