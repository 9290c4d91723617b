# The two commands a newcomer needs: `make test` and `make demo`. Both set up what they need first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Go-built Kubernetes binaries are cached here and reused across runs and checkouts.
MODELREUSE_CACHE ?= $(HOME)/.cache/modelreuse
export MODELREUSE_CACHE

.PHONY: help setup debs venv kube-tools test test-unit test-integration crd demo bench clean

help:
	@echo "make test    install everything (Debian packages, venv, Go-built Kubernetes binaries) and run all tests"
	@echo "make demo    run the main job on this machine, without a cluster"
	@echo "make crd     regenerate crds/ from the pydantic models"

setup: debs venv kube-tools

debs:
	bash tools/install-debs.sh

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml tools/requirements-nodeps.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m pip install -q --no-deps -r tools/requirements-nodeps.txt
	touch $@

kube-tools:
	bash tools/kube/build.sh
	bash tools/helm/build.sh

crd: venv
	$(PY) -m modelreuse crd > crds/modelreuse.io_modelreuses.yaml
	cp crds/modelreuse.io_modelreuses.yaml charts/modelreuse/crds/

test: setup
	$(PY) -m pytest

test-unit: venv
	$(PY) -m pytest tests/unit

test-integration: setup
	$(PY) -m pytest tests/integration

demo: venv
	$(PY) -m modelreuse demo

clean:
	rm -rf $(VENV) .pytest_cache
