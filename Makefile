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

.PHONY: setup demo test lock clean distclean

setup: $(STAMPS)/project

# Debian packages: FLARE's C++ build, sshd and rsync for `ray up`, Chromium for the dashboard test.
$(STAMPS)/apt: setup/apt-packages.txt
	@mkdir -p $(STAMPS)
	@pkgs=$$(grep -v '^#' setup/apt-packages.txt | xargs); \
	if dpkg-query -W -f='$${Status}\n' $$pkgs 2>/dev/null | grep -vq 'install ok installed' \
	   || [ $$(dpkg-query -W -f='$${Status}\n' $$pkgs 2>/dev/null | wc -l) -ne $$(echo $$pkgs | wc -w) ]; then \
	  echo "[setup] apt-get install $$pkgs"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$pkgs >/dev/null; \
	else echo "[setup] apt packages present"; fi
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

$(STAMPS)/project: $(STAMPS)/flare pyproject.toml
	@echo "[setup] installing tm23-sweep (editable)"
	$(PIP) install -q --no-deps --no-build-isolation -e .
	@touch $@

demo: setup
	$(VENV)/bin/tm23-sweep demo

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

# Re-pin setup/constraints.txt to what is installed now.
lock: setup
	@{ echo "# Every package of the venv, pinned to the set measured together (pip freeze, $$(date +%F))."; \
	   echo "# Used as pip constraints by the Makefile; regenerate with: make lock"; \
	   $(PIP) freeze | grep -v -E '^(torch==|mir-flare|-e )'; } > setup/constraints.txt.tmp
	@mv setup/constraints.txt.tmp setup/constraints.txt

clean:
	rm -rf .pytest_cache build *.egg-info

distclean: clean
	rm -rf $(VENV) $(STAMPS)
