# proxmox-operator: every command a developer or CI needs. `make demo` and `make test` are the two that matter.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help venv crds lint test test-unit test-simulator test-integration controlplane tools manifests cluster cluster-down \
        cluster-status demo demo-down bench fresh-check clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 20

venv: $(STAMP) ## create .venv with the project, its simulator and dev tools (kubectl included)
$(STAMP): pyproject.toml simulator/pyproject.toml
	@echo "==> creating $(VENV) and installing proxmox-operator[dev] and pve-simulator (first time: about a minute)"
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "error: Python 3.11+ is required: install it, or run make PYTHON=python3.11")'
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || { echo "error: $(PYTHON) cannot create virtual environments: apt-get install python3-venv" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]' -e ./simulator
	@touch $@

crds: $(STAMP) ## regenerate crds/, the Helm chart's copy and the README's condition tables from operator/proxmox_operator/api/v1alpha1/
	$(BIN)/python -m proxmox_operator.crdgen
	$(BIN)/python -m proxmox_operator.docgen README.md

manifests: $(STAMP) tools ## render deploy/rbac.yaml, deploy/operator.yaml and deploy/kustomize/ from the Helm chart
	$(BIN)/python hack/manifests.py

lint: $(STAMP) ## ruff (lint + format check), mypy --strict, and the layer contracts of .importlinter
	$(BIN)/ruff check operator simulator tests bench
	$(BIN)/ruff format --check operator simulator tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

# The control plane is built before pytest starts (the first time: 6-9 minutes on 2 cores, with progress), so a
# build never runs under a test's timeout; the test fixtures only start what is built.
controlplane: ## check what the local control plane needs, build kube-apiserver once (cached), install etcd
	@bash hack/cluster.sh prepare

# hack/tools.sh builds each tool from a Go module of its own once and caches it like the control plane: helm
# (hack/tools, about 1-2 minutes), kstatus (hack/kstatus: Flux's verdict on an object, from sigs.k8s.io/cli-utils,
# under a minute) and promtool (hack/promtool, about 5-6 minutes). The tests find them with `hack/tools.sh <tool>`
# and never build them themselves.
tools: ## build the developer tools from source once (cached): helm, kstatus, promtool
	@bash hack/tools.sh helm >/dev/null
	@bash hack/tools.sh kstatus >/dev/null
	@bash hack/tools.sh promtool >/dev/null

# The operator image (hack/image.sh: podman, a Debian base made with debootstrap once, about 1.5 minutes cold).
# Built before pytest like the control plane; with nothing changed it builds nothing and takes well under a second.
.PHONY: image
image: ## build the operator image from deploy/Dockerfile if its inputs changed; print its OCI archive's path
	@bash hack/image.sh

# The local node (hack/node.sh): kubelet and kube-scheduler built from hack/node/go.mod once (about 40 s after the
# control plane's build), containerd and the CNI plugins installed with apt when missing. tests/node needs it.
.PHONY: node
node: controlplane ## build the local node's kubelet once (cached), install containerd and the CNI plugins
	@bash hack/node.sh prepare

test: $(STAMP) lint controlplane tools image node ## every test: unit, simulator, and integration on the real local control plane
	$(BIN)/pytest $(PYTEST_ARGS)

test-unit: $(STAMP) ## unit tests only (no cluster, no network)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

test-simulator: $(STAMP) ## the PVE simulator's own tests (real HTTPS on 127.0.0.1)
	$(BIN)/pytest tests/simulator $(PYTEST_ARGS)

test-integration: $(STAMP) controlplane ## operator tests on the real kube-apiserver (starts the local control plane)
	@bash hack/tools.sh kstatus >/dev/null
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

cluster: $(STAMP) ## start the local control plane (etcd, kube-apiserver, kube-controller-manager) on 127.0.0.1
	@bash hack/cluster.sh up

cluster-down: ## stop the local control plane (PURGE=1 also deletes its state)
	@bash hack/cluster.sh down

cluster-status: ## is the local control plane up?
	@bash hack/cluster.sh status

demo: $(STAMP) controlplane ## control plane + CRD + PVE simulator + operator, and a sample cluster going Ready
	@bash hack/demo.sh up

demo-down: ## stop what `make demo` started
	@bash hack/demo.sh down

# N objects per operator (CI runs N=50 as a smoke test); WINDOW: steady-state seconds (default 300, 65 below N=500).
N ?= 1000
WINDOW ?=
bench: $(STAMP) controlplane ## proxmox-operator against bare kopf with N objects (results in bench/results/), then client benchmarks
	$(BIN)/python -m bench --objects $(N) $(if $(WINDOW),--window $(WINDOW)) $(if $(SHARDS),--shards $(SHARDS))

fresh-check: ## what a new machine does: a fresh clone of HEAD, every cache empty, `CI=true bash .ci/run`
	@bash hack/fresh-check.sh

clean: ## remove the venv and caches (not the cached Kubernetes binaries)
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
