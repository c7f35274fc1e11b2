# make all [PARAMS=quick]   the whole notebook pipeline on one parameter set
# make test                 pytest (the same environment bootstrap)
# make lab                  JupyterLab at the repository root (127.0.0.1, token) with the project kernel
# make bench                benchmarks: ratios measured side by side in one run
# make truth                the estimators' ground truth (params/truth.yaml, ~1 h on 2 cores) -> bench/data/truth_reference.npz
SHELL := /bin/bash
PARAMS ?= quick

# An active conda env made from environment.yml is used as is; otherwise a local .venv via pip.
ifeq ($(CONDA_DEFAULT_ENV),memaudit)
PY := python
ENV_STAMP :=
else
PY := $(CURDIR)/.venv/bin/python
ENV_STAMP := .venv/.installed
endif
# The FFCV backend is installed when its system libraries are present (see README).
EXTRAS := dev$(shell pkg-config --exists libturbojpeg opencv4 2>/dev/null && echo ,ffcv)
# On the project's shared machines CIFAR-100 in its official order is built from ../shared/data into
# data/ (the default data folder) unless CIFAR_DATA_DIR names another; elsewhere lib/data.py downloads
# the official archive (md5-checked).
SHARED_DATA := $(abspath ../shared/data)
OFFICIAL_CIFAR := $(if $(and $(wildcard $(SHARED_DATA)/cifar100/build.py),$(if $(CIFAR_DATA_DIR),,1)),data/cifar-100-python/train)
export MEMAUDIT_REFERENCE_DIR ?= $(if $(wildcard $(SHARED_DATA)/reference/*.npz),$(SHARED_DATA)/reference,)

NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
RUN := runs/$(PARAMS)
EXECUTED := $(patsubst notebooks/%,$(RUN)/%,$(NOTEBOOKS))
LIB := $(wildcard lib/*.py)

.PHONY: all run-all check-outputs test lab bench env clean-run
# One `make all` per parameter set at a time: a second one refuses (lock runs/.<params>.lock) instead of
# training the same models twice and colliding on the same partial notebooks.
all:
	@mkdir -p runs; flock -n -E 75 runs/.$(PARAMS).lock $(MAKE) --no-print-directory run-all; rc=$$?; \
	[ $$rc -eq 75 ] && echo "error: another 'make all PARAMS=$(PARAMS)' is running (lock runs/.$(PARAMS).lock)"; \
	exit $$rc

run-all: check-outputs $(EXECUTED)
	@echo "report: figures/$(PARAMS)/index.html"

# Steps whose artifacts changed or vanished since they ran lose their executed notebook, so they rerun.
check-outputs: | $(ENV_STAMP)
	@$(PY) -m lib.pipeline --check $(PARAMS)

env: $(ENV_STAMP)

.venv/.installed: pyproject.toml
	test -x .venv/bin/python || python3 -m venv .venv
	.venv/bin/pip install --upgrade pip
	.venv/bin/pip install -e ".[$(EXTRAS)]"
	.venv/bin/python -m ipykernel install --sys-prefix --name memaudit --display-name "memaudit (project)"
	touch $@

# CIFAR-100 in its official order, rebuilt from the shared re-split copy (checked by content digests).
$(OFFICIAL_CIFAR): | $(ENV_STAMP)
	$(PY) $(SHARED_DATA)/cifar100/build.py data

# Which lib modules each notebook uses (its imports, followed through lib; scripts/nbdeps.py).
DEPS_MK := runs/.deps.mk
$(DEPS_MK): $(NOTEBOOKS) $(LIB) scripts/nbdeps.py
	@mkdir -p $(dir $@) && python3 scripts/nbdeps.py $(NOTEBOOKS) > $@.tmp && mv $@.tmp $@
-include $(DEPS_MK)

# A reviewer's decisions are inputs of the step that reads them (and so of every step after it).
REVIEW_03_leakage_detection.ipynb := $(wildcard params/review/$(PARAMS)/duplicates.csv)
REVIEW_04_subpopulations.ipynb := $(wildcard params/review/$(PARAMS)/groups.csv)

# Each executed notebook depends on its source, the parameter file, the lib modules it uses and
# the previous step's executed notebook: a step reruns only when one of those changed.
define STEP
$(RUN)/$(notdir $(1)): $(1) params/$(PARAMS).yaml $$(DEPS_$(notdir $(1))) $(2) $$(REVIEW_$(notdir $(1))) | $(ENV_STAMP) $(OFFICIAL_CIFAR)
	$(PY) -m lib.pipeline $(PARAMS) $(1)
endef
$(foreach i,$(shell seq 1 $(words $(NOTEBOOKS))),$(eval $(call STEP,$(word $(i),$(NOTEBOOKS)),$(if $(filter 1,$(i)),,$(RUN)/$(notdir $(word $(shell expr $(i) - 1),$(NOTEBOOKS)))))))

test: $(ENV_STAMP) | $(OFFICIAL_CIFAR)
	$(PY) -m pytest -q $(PYTEST_ARGS); rc=$$?; [ $$rc -eq 5 ] && { echo "pytest collected no tests"; exit 1; }; exit $$rc

# JupyterLab at the repository root, on 127.0.0.1 with a token (jupyter/jupyter_server_config.py; README: Security).
lab: $(ENV_STAMP)
	$(PY) -m jupyter lab --config=$(CURDIR)/jupyter/jupyter_server_config.py$(if $(filter 0,$(shell id -u)), --allow-root)

# The bench-only extra (imagededup, for bench/bench_duplicates.py's comparison) on top of the environment.
BENCH_STAMP := $(if $(ENV_STAMP),.venv/.bench-installed,)
.venv/.bench-installed: pyproject.toml | $(ENV_STAMP)
	.venv/bin/pip install -e ".[$(EXTRAS),bench]"
	touch $@

bench: $(ENV_STAMP) $(BENCH_STAMP) | $(OFFICIAL_CIFAR)
	@for b in $(sort $(wildcard bench/bench_*.py)); do echo "== $$b"; $(PY) $$b || exit 1; done

# The many-model ground truth the cheap estimators are scored against (lib/estimators.py): trains into
# runs/truth/ (resuming) and writes the small reference bench/bench_estimators.py and the tests read.
.PHONY: truth
truth: $(ENV_STAMP) | $(OFFICIAL_CIFAR)
	nice -n 5 $(PY) -m lib.estimators --params truth --out bench/data/truth_reference.npz

clean-run:
	rm -rf $(RUN) figures/$(PARAMS)
