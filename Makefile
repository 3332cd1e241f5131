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

.PHONY: setup demo test test-full lock clean distclean

setup: $(STAMPS)/project $(STAMPS)/mace

# Debian packages: FLARE's C++ build, sshd and rsync for `ray up`, Chromium for the dashboard test, and the
# servers the cluster tests run. As root, missing ones are installed; otherwise make stops with one line
# naming them (an administrator installs them, or a module/conda environment provides them).
APT_LIST ?= setup/apt-packages.txt
$(STAMPS)/apt: $(APT_LIST)
	@mkdir -p $(STAMPS)
	@pkgs=$$(grep -v '^#' $(APT_LIST) | xargs); \
	missing=$$(for p in $$pkgs; do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' \
	           || echo $$p; done | xargs); \
	if [ -z "$$missing" ]; then echo "[setup] apt packages present"; \
	elif [ "$$(id -u)" -ne 0 ]; then \
	  echo "[setup] missing Debian packages: $$missing; as a non-root user ask an administrator for" \
	       "'apt-get install $$missing' (or load them as environment modules) and run make again" >&2; exit 1; \
	else \
	  echo "[setup] apt-get install $$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
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

# FLARE from its sdist, offline (setup/flare/build_flare.sh); about 2.5 min on 2 cores the
# first time, then pip's wheel cache makes it seconds.
$(STAMPS)/flare: $(STAMPS)/apt $(STAMPS)/deps setup/flare/build_flare.sh setup/flare/eigen_from_debian.cmake
	@echo "[setup] building mir-flare 1.4.0 from source (first time: ~3 min)"
	setup/flare/build_flare.sh $(VENV)
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

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

# The checks of all 27 metals (phases of every trajectory), about 10 minutes on 2 cores.
test-full: setup
	$(PY) -m pytest -m full_table $(PYTEST_ARGS)

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
