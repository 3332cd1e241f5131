# tm23-sweep: set-up, demo and tests from a fresh Debian 12 / Python 3.11 machine.
#   make demo   runs the main job on the embedded mini-TM23
#   make test   runs the test suite
# Both build everything first. Each set-up step leaves a stamp in .stamps/ and is
# skipped on the next run while its inputs are unchanged.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMPS := .stamps
PYTEST_ARGS ?=

.PHONY: setup demo test test-full lock clean distclean FORCE

setup: $(STAMPS)/project $(STAMPS)/mace

# System packages (setup/system-packages.toml): FLARE's C++ build for every target, and for `make test`
# also sshd, rsync, sshfs, Chromium, Slurm and PostgreSQL. As root, missing ones are installed with
# apt-get. Without root, the build packages that PyPI has (CMake, Ninja, Eigen, nlohmann-json, OpenBLAS)
# come from PyPI into the venv, and make stops with one line naming any other missing package.
# TOOLCHAIN=pypi takes the PyPI ones even where Debian's are installed; TOOLCHAIN=debian never does.
SYSTEM_PACKAGES ?= setup/system-packages.toml
TOOLCHAIN ?= auto
SYSTEM_CHECK = $(PYTHON) setup/system_packages.py --list $(SYSTEM_PACKAGES) check --toolchain $(TOOLCHAIN)
# Rewritten only when TOOLCHAIN changes, so that asking for another toolchain redoes the check and FLARE.
$(STAMPS)/toolchain-asked: FORCE
	@mkdir -p $(STAMPS)
	@echo "$(TOOLCHAIN)" | cmp -s - $@ || echo "$(TOOLCHAIN)" > $@

$(STAMPS)/system-build: $(SYSTEM_PACKAGES) setup/system_packages.py $(STAMPS)/toolchain-asked
	@$(SYSTEM_CHECK) --scope build --out $(STAMPS)/toolchain
	@touch $@

$(STAMPS)/system-test: $(STAMPS)/system-build
	@$(SYSTEM_CHECK) --scope test
	@touch $@

# The venv, with torch==2.13.0 alone first: it is the CPU build on this machine's disk,
# and any other spec, or a package resolving torch first, pulls a multi-GB CUDA build.
$(STAMPS)/venv:
	@mkdir -p $(STAMPS)
	@echo "[setup] creating $(VENV) with torch==2.13.0 (CPU)"
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q torch==2.13.0
	@touch $@

$(STAMPS)/deps: $(STAMPS)/venv setup/requirements.txt setup/constraints.txt
	@echo "[setup] installing pinned dependencies"
	$(PIP) install -q -r setup/requirements.txt -c setup/constraints.txt
	@touch $@

# FLARE from its sdist, offline (setup/flare/build_flare.sh) with the toolchain chosen above; about
# 2.5 min on 2 cores the first time, then pip's wheel cache makes it seconds (debian toolchain only).
$(STAMPS)/flare: $(STAMPS)/system-build $(STAMPS)/deps setup/flare/build_flare.sh setup/flare/offline_deps.cmake
	@echo "[setup] building mir-flare 1.4.0 from source, $$(cat $(STAMPS)/toolchain) toolchain (first time: ~3 min)"
	setup/flare/build_flare.sh $(VENV) $$(cat $(STAMPS)/toolchain) "$$($(PYTHON) setup/system_packages.py --list $(SYSTEM_PACKAGES) requirements)"
	@touch $@

# MACE's own venv: mace-torch 0.3.16 pins e3nn==0.4.4 and nequip 0.19 needs e3nn>=0.6, so MACE
# trains in .venv-mace (sweep/trainers/mace runs it as a subprocess). torch==2.13.0 alone first, as above.
MACE_VENV := .venv-mace
MACE_PIP := $(MACE_VENV)/bin/python -m pip --disable-pip-version-check
$(STAMPS)/mace: setup/mace/requirements.txt setup/mace/constraints.txt
	@mkdir -p $(STAMPS)
	@echo "[setup] creating $(MACE_VENV) for MACE (torch==2.13.0 CPU, mace-torch pinned)"
	[ -x $(MACE_VENV)/bin/python ] || $(PYTHON) -m venv $(MACE_VENV)
	$(MACE_PIP) install -q torch==2.13.0
	$(MACE_PIP) install -q -r setup/mace/requirements.txt -c setup/mace/constraints.txt
	@touch $@

$(STAMPS)/project: $(STAMPS)/flare pyproject.toml
	@echo "[setup] installing tm23-sweep (editable)"
	$(PIP) install -q --no-deps --no-build-isolation -e .
	@touch $@

demo: setup
	$(VENV)/bin/tm23-sweep demo

test: setup $(STAMPS)/system-test
	$(PY) -m pytest $(PYTEST_ARGS)

# The checks of all 27 metals (phases of every trajectory), about 13 minutes on 2 cores, and the whole
# set-up as a user without root on the PyPI toolchain (about 6.5 minutes).
test-full: setup $(STAMPS)/system-test
	$(PY) -m pytest -m 'full_table or full_setup' $(PYTEST_ARGS)

# Re-pin setup/constraints.txt to what is installed now.
lock: setup
	@{ echo "# Every package of the venv, pinned to the set measured together (pip freeze, $$(date +%F))."; \
	   echo "# Used as pip constraints by the Makefile; regenerate with: make lock"; \
	   $(PIP) freeze | grep -v -E '^(torch==|mir-flare|-e |# Editable)'; } > setup/constraints.txt.tmp
	@mv setup/constraints.txt.tmp setup/constraints.txt
	@{ echo "# Every package of .venv-mace (MACE's own venv), pinned to the set measured together (pip freeze, $$(date +%F))."; \
	   echo "# Used as pip constraints by the Makefile's .stamps/mace; regenerate with: make lock"; \
	   $(MACE_PIP) freeze | grep -v -E '^(torch==|-e |# Editable)'; } > setup/mace/constraints.txt.tmp
	@mv setup/mace/constraints.txt.tmp setup/mace/constraints.txt

clean:
	rm -rf .pytest_cache build *.egg-info

distclean: clean
	rm -rf $(VENV) $(MACE_VENV) $(STAMPS)
