# Two commands do everything on a fresh machine with Python 3.11:
#   make repro   - the whole pipeline (fetch ... evaluate), then push to the DVC remote
#   make test    - the test suite (offline, tiny fixture; `make test-slow` adds full-data runs)
# Both create .venv with pinned versions on first use.

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(abspath $(VENV))/bin
STAMP  := $(VENV)/.installed

# Stages call `python -m pipeline.<stage>`; the venv's python must come first.
export PATH := $(BIN):$(PATH)
export TF_CPP_MIN_LOG_LEVEL ?= 2
export GX_ANALYTICS_ENABLED ?= false
# A local mirror of the dataset replaces the network (see README). Machines of
# this project keep one at ../shared/data/mnist; elsewhere the public mirrors are used.
export DATA_MIRROR_DIR ?= $(if $(wildcard ../shared/data/mnist/*.gz),$(abspath ../shared/data/mnist),)

REV ?= main

.PHONY: setup repro test test-slow diff airflow-standalone airflow-trigger lock clean-venv

$(STAMP): requirements.txt constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt -c constraints.txt
	touch $@

setup: $(STAMP)

repro: $(STAMP)
	$(BIN)/dvc repro
	$(BIN)/dvc push

test: $(STAMP)
	$(BIN)/python -m pytest

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

diff: $(STAMP)
	$(BIN)/python -m pipeline.diff --rev $(REV)

lock: $(STAMP)
	$(BIN)/pip freeze --exclude-editable > constraints.txt

clean-venv:
	rm -rf $(VENV)
