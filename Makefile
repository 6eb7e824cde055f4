# The two commands: `make demo` (train on the embedded digits data) and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test bench bench-published bench-published-bg bench-quality bench-quality-bg \
	bench-ais-bg bench-tightness-bg bench-carry reproduce-table clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	@touch $@

demo: $(STAMP)
	$(VENV)/bin/pyro-vae train examples/configs/digits.yaml --out runs/demo --overwrite

# -n auto: one pytest-xdist worker a core (tests/conftest.py gives each its share of torch
# threads); `$(PY) -m pytest tests/...` alone runs in one process
test: $(STAMP)
	$(PY) -m pytest -n auto

# The wheel and sdist of `python -m build`, installed into a fresh venv from the package index,
# train and evaluate outside the source tree (tests/test_packaging.py: minutes; make test
# deselects it, CI runs it).
.PHONY: test-packaging
test-packaging: $(STAMP)
	$(PY) -m pytest -m packaging

# ruff (lint, then the formatter's check) over the tree and mypy over inference/ and the public
# API (pyproject.toml's [tool.ruff] and [tool.mypy]); CI runs it before the tests, and
# .pre-commit-config.yaml runs the same commands at each commit (`pre-commit install`).
LINT_STAMP := $(VENV)/.installed-lint
.PHONY: lint
$(LINT_STAMP): $(STAMP)
	$(PY) -m pip install -q -c constraints.txt -e '.[lint]'
	@touch $@

lint: $(LINT_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The documentation site (mkdocs.yml, docs/): site/index.html, opened from the disk. --strict: a
# broken link or cross-reference, or a docstring naming an object that does not exist, fails it.
# Needs no network (MathJax is loaded by the reader's browser). Installs the docs extra first.
DOCS_STAMP := $(VENV)/.installed-docs
.PHONY: docs
$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install -q -c constraints.txt -e '.[docs]'
	@touch $@

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

bench: $(STAMP)
	$(PY) -m benchmarks

# pyro-vae's cache folder, as pyro_vae.cache.cache_dir() finds it.
CACHE := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/pyro-vae

# The published Fashion-MNIST protocol, benchmarks/published.py (hours; resumes from its run
# directories in STATE). MODELS=vamp or MODELS=hvae,iwae-dreg trains only those (default: all,
# one after another), so two jobs can share the table, one per core; a job leaves a run that
# the other one holds (each run directory is locked while it is trained or scored) and goes on
# to the next model. SEEDS="1 2" trains those seeds of each model (default 0).
STATE   ?= $(CACHE)/bench-published
THREADS ?= 2
MODELS  ?=
SEEDS   ?= 0
comma   := ,
space   := $(subst ,, )
JOB      = $(if $(MODELS),-$(subst $(comma),+,$(MODELS)))$(if $(filter-out 0,$(SEEDS)),-seed$(subst $(space),+,$(strip $(SEEDS))))
bench-published: $(STAMP)
	OMP_NUM_THREADS=$(THREADS) $(PY) -m benchmarks.published --threads $(THREADS) \
		--state $(call path,$(STATE)) $(if $(MODELS),--models $(MODELS)) --seeds $(SEEDS)

# How loose IS is on the protocol VAE (about 11 h on one thread; resumes from its saved pieces).
# Two jobs can share the pieces, one per core: THREADS=1 for both, AIS_JOB=job-2 for the second
# (each piece is locked while it is scored; a job passes over the pieces the other one holds).
AIS_STATE ?= $(CACHE)/ais-quality
AIS_JOB   ?= job
RUN       ?= $(STATE)/vae-seed0

# $(call path,PATH): PATH made absolute (against this folder) and quoted as one word of the
# shell, whatever spaces or quotes it holds (make's own abspath splits it at spaces).
path = '$(subst ','\'',$(if $(filter /%,$(firstword $(1))),$(1),$(CURDIR)/$(1)))'

# $(call background,DIR,NAME,MODULE AND ARGS): `python -m MODULE AND ARGS` in the background,
# from a snapshot of HEAD (edits to the work tree cannot reach the running job). Everything the
# job keeps besides its results is in the folder DIR/NAME, marked as ours: code/ (the snapshot),
# log (appended to) and pid. A folder of that name without the mark is left alone: no flag
# makes this target delete a user's files.
MARK := .pyro-vae-job
define background
@job=$(call path,$(1)/$(2)); \
if [ -f "$$job/pid" ] && kill -0 "$$(cat "$$job/pid")" 2>/dev/null; then \
	echo "already running: pid $$(cat "$$job/pid"), log $$job/log"; exit 1; fi; \
if [ -e "$$job" ] && [ ! -f "$$job/$(MARK)" ]; then \
	echo "$$job exists and is not a pyro-vae job folder; nothing was changed" >&2; exit 1; fi; \
mkdir -p "$$job" && touch "$$job/$(MARK)" && rm -rf "$$job/code" && mkdir "$$job/code" && \
	git archive HEAD | tar -x -C "$$job/code" || exit 1; \
(cd "$$job/code" && OMP_NUM_THREADS=$(THREADS) exec setsid nohup $(call path,$(PY)) -m $(3) \
	--threads $(THREADS) --results $(call path,benchmarks/results) \
	--out $(call path,BENCHMARKS.md)) >> "$$job/log" 2>&1 < /dev/null & echo $$! > "$$job/pid"; \
echo "started: pid $$(cat "$$job/pid"), code $$(git rev-parse --short HEAD), log $$job/log"
endef

bench-published-bg: $(STAMP)
	$(call background,$(STATE),job$(JOB),benchmarks.published --state $(call path,$(STATE)) --carry $(call path,$(CARRY)) $(if $(MODELS),--models $(MODELS)) --seeds $(SEEDS))

# How loose each scored model's IS bound is, benchmarks/tightness.py: AIS (16 chains x 1000
# steps) against IS on the first 200 test images of each (MODELS, SEEDS) run in STATE (about
# 15-40 min a model on one thread; resumes after its last saved piece).
bench-tightness-bg: $(STAMP)
	$(call background,$(STATE),job-tightness$(JOB),benchmarks.published --tightness --state $(call path,$(STATE)) --carry $(call path,$(CARRY)) $(if $(MODELS),--models $(MODELS)) --seeds $(SEEDS))

# Before a session ends on a machine the next one may not be: each running job of STATE stopped
# by Ctrl-C's signal (it saves where it is) and waited for (a pid file whose process is not a
# benchmarks job is passed over), then what each unfinished run needs to go on copied into
# CARRY for a commit (benchmarks/carry.py). The next machine's jobs restore it.
CARRY ?= benchmarks/carry
bench-carry: $(STAMP)
	@for pidfile in $(call path,$(STATE))/job*/pid; do \
		[ -f "$$pidfile" ] || continue; pid=$$(cat "$$pidfile"); \
		grep -qa 'benchmarks\.' "/proc/$$pid/cmdline" 2>/dev/null || continue; \
		echo "stopping job $$pid ($$pidfile)"; kill -INT "$$pid"; kill -CONT "$$pid"; \
		tail --pid="$$pid" -f /dev/null; done
	$(PY) -m benchmarks.carry save --state $(call path,$(STATE)) --carry $(call path,$(CARRY))

# The published table's shipped weights (benchmarks/results/published/*.weights.pt, digests in
# weights.json there), each scored again by pyro-vae evaluate from a run directory made from its
# preset, in $(CACHE)/published-weights: benchmarks/weights.py (all 10 000 test images with the
# row's K = 5000: about 10-20 min a row on a CPU). LIMIT=N scores the first N test images only.
LIMIT ?=
reproduce-table: $(STAMP)
	OMP_NUM_THREADS=$(THREADS) $(PY) -m benchmarks.weights reproduce --threads $(THREADS) \
		$(if $(LIMIT),--limit $(LIMIT))

# The names these targets had before benchmarks/published.py named them.
bench-quality: bench-published
bench-quality-bg: bench-published-bg

bench-ais-bg: $(STAMP)
	$(call background,$(AIS_STATE),$(AIS_JOB),benchmarks.ais --quality $(call path,$(RUN)))

# Caches and the built docs (site/, which `make docs` rebuilds whole): trained runs (runs/, the
# default --out) are the user's and stay.
clean:
	rm -rf .pytest_cache site
