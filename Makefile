# kubetune: `make demo` runs a FineTuneJob end to end on a local cluster; `make test` runs all tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The operator alone, from its extra: what an operator image holds (no ML stack, no Jinja).
# The local operator runs from here, so every e2e test and the demo prove that install works.
OPERATOR_VENV ?= .venv-operator
# The Helm Go library (helm-sdkpy, Python >= 3.12) for hack/helm/helm.py: chart lint/template/install.
# pyenv's 3.12 directly: its python3.12 shim refuses to run unless 3.12 is the selected version.
HELM_PYTHON ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python) $(shell command -v python3.12))
HELM_VENV ?= .venv-helm
SERVICES_VENV ?= .venv-services
# uv (hack/lock.sh, make test-deps-*).
TOOLS_VENV ?= .venv-tools
export HF_HUB_OFFLINE := 1

.PHONY: help apt-deps install lock lock-upgrade test-deps-latest test-deps-lowest helm manifests chart-lint crds docs dashboards cluster-up cluster-down operator demo test test-unit clean

help:
	@echo "make demo          local cluster + operator + examples/finetunejob.yaml (LoRA on SmolLM2-135M)"
	@echo "make test          all tests (unit, trainer, and e2e on the local cluster)"
	@echo "make test-unit     tests that need no cluster"
	@echo "make test-deps-latest / test-deps-lowest   trainer, evaluator and e2e demo tests on the newest / lowest versions pyproject allows"
	@echo "make lock          re-resolve requirements/ (the lock) from pyproject.toml; make lock-upgrade takes the newest"
	@echo "make cluster-up    start the local Kubernetes control plane and node agent (.cluster/kubeconfig)"
	@echo "make cluster-down  stop the operator and the local cluster"
	@echo "make crds          regenerate the chart's CRDs (charts/kubetune/files/crds) from the API models, then manifests/"
	@echo "make manifests     render charts/kubetune into manifests/ (the kustomize base)"
	@echo "make chart-lint    helm lint charts/kubetune (helm-sdkpy)"
	@echo "make docs          regenerate docs/reference/ (a page per kind, condition reasons) from the API models"
	@echo "make dashboards    regenerate the Grafana dashboard and PrometheusRules (charts/kubetune/files) from monitoring/"

# Every venv installs exact versions with hashes from requirements/ (the lock, hack/lock.sh),
# without dependency resolution or build isolation, then the project itself from this tree.
# torch is the CPU wheel (requirements/dev.txt), never a CUDA download.
LOCKED_INSTALL := -m pip install -q --require-hashes --no-deps
# Where the lock lies: make test-deps-* builds its throwaway venvs with these same rules from
# the end of the range it resolved (.deps-END/).
LOCK_DIR ?= requirements
PROJECT_INSTALL := -m pip install -q --no-deps --no-build-isolation -e .

$(VENV)/.installed: $(LOCK_DIR)/dev.txt $(LOCK_DIR)/demo.txt pyproject.toml
	rm -rf $(VENV) && $(PYTHON) -m venv $(VENV)
	$(PY) $(LOCKED_INSTALL) -r $(LOCK_DIR)/dev.txt -r $(LOCK_DIR)/demo.txt
	$(PY) $(PROJECT_INSTALL)
	touch $@

$(OPERATOR_VENV)/.installed: $(LOCK_DIR)/operator.txt pyproject.toml
	rm -rf $(OPERATOR_VENV) && $(PYTHON) -m venv $(OPERATOR_VENV)
	$(OPERATOR_VENV)/bin/python $(LOCKED_INSTALL) -r $(LOCK_DIR)/operator.txt
	$(OPERATOR_VENV)/bin/python $(PROJECT_INSTALL)
	touch $@

$(HELM_VENV)/.installed: $(LOCK_DIR)/helm.txt
	rm -rf $(HELM_VENV) && $(HELM_PYTHON) -m venv $(HELM_VENV)
	$(HELM_VENV)/bin/python $(LOCKED_INSTALL) -r $(LOCK_DIR)/helm.txt
	touch $@

$(SERVICES_VENV)/.installed: $(LOCK_DIR)/services.txt
	rm -rf $(SERVICES_VENV) && $(PYTHON) -m venv $(SERVICES_VENV)
	$(SERVICES_VENV)/bin/python $(LOCKED_INSTALL) -r $(LOCK_DIR)/services.txt
	touch $@

$(TOOLS_VENV)/.installed: $(LOCK_DIR)/tools.txt
	rm -rf $(TOOLS_VENV) && $(PYTHON) -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/python $(LOCKED_INSTALL) -r $(LOCK_DIR)/tools.txt
	touch $@

# Re-resolve the lock from pyproject.toml (keeping what still fits); lock-upgrade takes the newest.
lock: $(TOOLS_VENV)/.installed
	UV=$(TOOLS_VENV)/bin/uv PYTHON=$(TOOLS_VENV)/bin/python bash hack/lock.sh

lock-upgrade: $(TOOLS_VENV)/.installed
	UV=$(TOOLS_VENV)/bin/uv PYTHON=$(TOOLS_VENV)/bin/python bash hack/lock.sh --upgrade

# The ends of pyproject's ranges: a throwaway venv with the newest versions the registry serves
# (upper bounds lifted) or the lower bounds, then the trainer, evaluator and e2e demo tests on it.
test-deps-latest: install
	bash hack/test-deps.sh latest

test-deps-lowest: install
	bash hack/test-deps.sh lowest

helm: $(HELM_VENV)/.installed

apt-deps:
	bash hack/apt-deps.sh

install: apt-deps $(VENV)/.installed $(OPERATOR_VENV)/.installed $(HELM_VENV)/.installed $(SERVICES_VENV)/.installed $(TOOLS_VENV)/.installed

crds: install
	$(PY) -m kubetune_api.crdgen --out charts/kubetune/files/crds
	$(PY) hack/helm/manifests.py

manifests: install
	$(PY) hack/helm/manifests.py

chart-lint: install
	$(HELM_VENV)/bin/python hack/helm/helm.py lint charts/kubetune

docs: install
	$(PY) -m kubetune_api.docgen --out docs/reference

dashboards: install
	$(PY) -m monitoring

cluster-up: install
	bash hack/cluster/up.sh

cluster-down:
	-bash hack/operator.sh stop
	bash hack/cluster/down.sh

operator: install cluster-up
	bash hack/operator.sh start

demo: install
	bash hack/demo.sh

test-unit: install
	$(PY) -m pytest -m "not cluster" -q

test: install
	bash hack/test.sh

clean:
	rm -rf build *.egg-info .pytest_cache runs
