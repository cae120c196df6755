# Two commands do everything on a fresh machine with Python 3.11:
#   make repro   - the whole pipeline (fetch ... evaluate), then push to the DVC remote
#   make test    - the test suite (offline, tiny fixture; `make test-slow` adds full-data runs)
#   make diff    - what the workspace changed vs REV (default main): reports/diff/report.md
#                  (docs/pr-report.md; the pull-request workflow posts the same report)
#   make tutorial - the tutorial's exact protocol as the DVC experiment `tutorial` (slow)
#   make seeds N=3 - N seeds of every model as DVC experiments: metrics/seeds.json and
#                  reports/seeds.md (mean ± std and min per model, beside the references)
#   make airflow-standalone / airflow-trigger - the retraining DAG on a local Airflow
#                  (docs/airflow.md)
#   make bench   - training throughput: the project's path vs plain Keras vs PyTorch, in one run
#                  on this machine, with its matmul peak: reports/bench-train.{md,json}
#                  (BENCH_ARGS="--variants fused xla bf16" adds the paths that did not help,
#                  "--against DIR" an older commit's worktree; bench/op_speed.py --against REV
#                  compares the C++ op alone with REV's, in one process)
#   make pictures-accuracy - the champion (or MODEL=...) on data/pictures and data/pictures-rendered
#                  (fonts and drawn strokes, not MNIST) beside MNIST's test set (PICTURE_ARGS=--deskew ...)
#   make cluster-up / cluster-trigger / cluster-down - the DAG on a real multi-worker cluster
#                  on this machine: PostgreSQL, Redis, Celery, S3 remote (docs/airflow.md; root)
#   make test-cluster - only the cluster tests (root; `make test` includes them)
#   make cluster-faults - the fault tests, their rows into reports/cluster-faults.md (root)
# Both create .venv with pinned versions on first use.

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(abspath $(VENV))/bin
STAMP  := $(VENV)/.installed

# Stages call `python -m pipeline.<stage>`; the venv's python must come first.
export PATH := $(BIN):$(PATH)
export TF_CPP_MIN_LOG_LEVEL ?= 2
export GX_ANALYTICS_ENABLED ?= false
# A local mirror of the dataset replaces the network (see docs/stages.md). Machines of
# this project keep one at ../shared/data/mnist; elsewhere the public mirrors are used.
export DATA_MIRROR_DIR ?= $(if $(wildcard ../shared/data/mnist/*.gz),$(abspath ../shared/data/mnist),)

REV ?= main
N   ?= 3
TUTORIAL_PARAMS := -S train.learning_rate=0.001 -S train.lr_schedule=constant \
                   -S train.epochs=50 -S train.validate_every_steps=10

# Local Airflow (docs/airflow.md; cluster/standalone.sh starts it): its SQLite DB, logs,
# generated secrets and admin password live in .airflow/; the DAG folder is this
# checkout's dags/; it listens on 127.0.0.1 unless LISTEN_HOST says otherwise.
# TRAINING_SLOTS is the size of the `training` pool: how many models train at once.
# Each training uses two cores (its batches run in two parts, train.batch_parts),
# so on a 2-core machine two trainings share them.
AIRFLOW_ENV    := AIRFLOW_HOME=$(abspath .airflow) AIRFLOW__CORE__DAGS_FOLDER=$(abspath dags) \
                  AIRFLOW__CORE__LOAD_EXAMPLES=False
export TRAINING_SLOTS ?= 2

.PHONY: setup repro test test-slow test-cluster diff seeds tutorial bench airflow-standalone airflow-trigger \
        lock clean-venv cluster-up cluster-trigger cluster-down cluster-faults

# The project installed editable with its test extras; constraints.txt pins every
# transitive version (`make lock` regenerates it from the venv).
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]' -c constraints.txt
	touch $@

setup: $(STAMP)

repro: $(STAMP)
	$(BIN)/dvc repro
	$(BIN)/dvc push

test: $(STAMP)
	$(BIN)/python -m pytest

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

test-cluster: $(STAMP)
	$(BIN)/python -m pytest -m cluster

diff: $(STAMP)
	$(BIN)/python -m pipeline.review.diff --rev $(REV)

seeds: $(STAMP)
	$(BIN)/python -m pipeline.review.seeds --n $(N)

# The tutorial's exact protocol (constant lr 0.001, up to 50 epochs, validation every
# 10 steps) as the DVC experiment `tutorial`: one switch away from the default recipe.
tutorial: $(STAMP)
	$(BIN)/dvc exp run -n tutorial $(TUTORIAL_PARAMS)

bench: $(STAMP)
	$(BIN)/python bench/train_speed.py $(BENCH_ARGS)

airflow-standalone: $(STAMP)
	bash cluster/standalone.sh

# Needs `make airflow-standalone` running. Unpausing also turns the weekly schedule on
# (its first run is the next one to come: no run for a week already past).
airflow-trigger: $(STAMP)
	$(AIRFLOW_ENV) $(BIN)/airflow dags unpause retrain
	$(AIRFLOW_ENV) $(BIN)/airflow dags trigger retrain

lock: $(STAMP)
	$(BIN)/pip freeze --exclude-editable > constraints.txt
	$(BIN)/pip check

# A real Airflow cluster on this machine (cluster/up.sh says what runs where).
# The cluster runs the committed HEAD of this checkout: commit before cluster-trigger.
cluster-up: $(STAMP)
	bash cluster/up.sh

cluster-trigger: $(STAMP)
	bash cluster/trigger.sh

cluster-down:
	bash cluster/down.sh

# The fault tests (the cluster's and the publish race), each writing its row
# (tests/fault_table.py); the rows become reports/cluster-faults.md.
FAULT_ROWS := $(abspath tmp)/cluster-faults.jsonl
cluster-faults: $(STAMP)
	mkdir -p tmp && rm -f $(FAULT_ROWS)
	FAULTS_LOG=$(FAULT_ROWS) $(BIN)/python -m pytest -n 0 -m "slow or not slow" tests/test_cluster.py tests/test_publish_race.py
	$(BIN)/python tests/fault_table.py $(FAULT_ROWS) reports/cluster-faults.md "make cluster-faults"

clean-venv:
	rm -rf $(VENV)

# Accuracy on digit pictures as people make them (data/pictures, data/pictures-rendered; docs/serving.md), per class, beside the MNIST test set: data/raw if fetched, else the local mirror.
.PHONY: pictures-accuracy
pictures-accuracy: $(STAMP)
	$(BIN)/python -m pipeline.serve.pictures score $(if $(MODEL),--model $(MODEL)) $(PICTURE_ARGS) \
		--mnist $(or $(wildcard data/raw),$(DATA_MIRROR_DIR),data/raw)
