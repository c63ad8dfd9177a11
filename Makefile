# Two entry points for a fresh machine: `make demo` (the main job) and `make test` (the suite).
# Both create .venv with the pinned CPU torch on first use.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LEROBOT_VENV ?= .venv-lerobot

.PHONY: setup demo test lint install-check lerobot-check bench-quick

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch is pinned to 2.13.0 in pyproject.toml; any other spec downloads several GB of CUDA packages.
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/s2r demo --seed 0 --force

# Both cores of a 2-core machine; a test file stays on one worker, so its module fixtures are built once. The 15
# slowest tests are listed last, to keep the suite under its ~6 minutes on 2 cores.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=15

# A non-editable install: the wheel carries the configs, and s2r deploys from an empty directory (about a minute).
install-check: $(STAMP)
	$(BIN)/python -m pytest -q -m slow tests/test_install.py

# LeRobot's own loader reads s2r's LeRobot dataset back. It needs torchvision, whose wheels pin another torch than
# this stack's, so it gets a venv of its own (about 6 GB and 4 minutes the first time; ci/lerobot-requirements.txt).
$(LEROBOT_VENV)/.installed: ci/lerobot-requirements.txt
	$(PYTHON) -m venv $(LEROBOT_VENV)
	$(LEROBOT_VENV)/bin/python -m pip install --quiet -r ci/lerobot-requirements.txt
	touch $@

lerobot-check: $(STAMP) $(LEROBOT_VENV)/.installed
	S2R_LEROBOT_PYTHON=$(LEROBOT_VENV)/bin/python $(BIN)/python -m pytest -q tests/test_datasets.py -k lerobot_dataset_reads

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy s2r sim robot policies randomization export
	$(BIN)/lint-imports

bench-quick: $(STAMP)
	for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b --quick || exit 1; done
