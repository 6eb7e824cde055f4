# The two commands: `make demo` (train on the embedded digits data) and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test bench bench-quality bench-quality-bg bench-ais-bg clean

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
# two jobs can share the table, one per core; a job leaves a run that the other one holds (each
# run directory is locked while it is trained or scored) and goes on to the next model.
STATE   ?= $(HOME)/.cache/pyro-vae/bench-quality
THREADS ?= 2
MODELS  ?=
comma   := ,
JOB      = $(if $(MODELS),-$(subst $(comma),+,$(MODELS)))
bench-quality: $(STAMP)
	OMP_NUM_THREADS=$(THREADS) $(PY) -m benchmarks.quality --threads $(THREADS) --state $(STATE) \
		$(if $(MODELS),--models $(MODELS))

# How loose IS is on the protocol VAE (about 11 h on one thread; resumes from its saved pieces).
AIS_STATE ?= $(HOME)/.cache/pyro-vae/ais-quality
RUN       ?= $(STATE)/vae-seed0

# $(call background,DIR,JOB,MODULE AND ARGS): `python -m MODULE AND ARGS` in the background from
# a snapshot of HEAD in DIR/codeJOB (edits to the work tree cannot reach the running job),
# appending to DIR/logJOB, its process id in DIR/pidJOB; JOB is empty or -<models>.
define background
@if [ -f $(1)/pid$(2) ] && kill -0 $$(cat $(1)/pid$(2)) 2>/dev/null; then \
	echo "already running: pid $$(cat $(1)/pid$(2))"; exit 1; fi
rm -rf $(1)/code$(2) && mkdir -p $(1)/code$(2) && git archive HEAD | tar -x -C $(1)/code$(2)
cd $(1)/code$(2) && OMP_NUM_THREADS=$(THREADS) setsid nohup $(abspath $(PY)) -m $(3) \
	--threads $(THREADS) --results $(abspath benchmarks/results) --out $(abspath BENCHMARKS.md) \
	>> $(1)/log$(2) 2>&1 < /dev/null & echo $$! > $(1)/pid$(2)
@echo "started: pid $$(cat $(1)/pid$(2)), code $$(git rev-parse --short HEAD), log $(1)/log$(2)"
endef

bench-quality-bg: $(STAMP)
	$(call background,$(STATE),$(JOB),benchmarks.quality --state $(STATE) $(if $(MODELS),--models $(MODELS)))

bench-ais-bg: $(STAMP)
	$(call background,$(AIS_STATE),,benchmarks.ais --quality $(abspath $(RUN)))

clean:
	rm -rf runs .pytest_cache
