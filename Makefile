# rtmx.ha: `make lab` deploys the container lab, `make test` runs every test.
# Both set up what they need: the virtualenv, a Docker engine, the node image.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
COLLECTION_LINK := .collections/ansible_collections/rtmx/ha
LAB_SUBNET ?=
LAB_EXTRA := $(if $(LAB_SUBNET),-e rtmx_lab_subnet=$(LAB_SUBNET),)
TIMINGS := .cache/timings.txt

export PATH := $(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export ANSIBLE_FORCE_COLOR ?= 1
# Where the node image tag comes from; recomputed so a changed input rebuilds.
export RTMX_NODE_IMAGE = $(shell scripts/node-image.sh tag)

timed = scripts/timed.sh $(TIMINGS)

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(VENV)/.installed: requirements.txt requirements-dev.txt sync_server/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt
	$(BIN)/pip install -q -e 'sync_server[test]'
	touch $@

$(COLLECTION_LINK):
	mkdir -p $(dir $@)
	ln -sfn ../../.. $@

.PHONY: venv
venv: $(VENV)/.installed $(COLLECTION_LINK) ## Create the controller virtualenv

.PHONY: docker
docker: ## Install and start a Docker engine when none runs
	scripts/ensure-docker.sh

.PHONY: image
image: docker ## Build the lab node image (only when its inputs changed)
	scripts/node-image.sh build

.PHONY: lab
lab: venv image ## Create the container lab and converge site.yml on it
	ansible-playbook -i inventories/lab $(LAB_EXTRA) playbooks/lab.yml

.PHONY: drill
drill: venv ## Run every failover drill against the lab (make lab first); DRILL_ARGS='-e chaos_faults=10'
	@test -f .lab/connection.env || $(MAKE) --no-print-directory lab
	ansible-playbook -i inventories/lab playbooks/failover-drill.yml $(DRILL_ARGS)

.PHONY: verify
verify: venv ## Verify the lab's whole stack (rtmx.ha.ha_verify)
	ansible-playbook -i inventories/lab playbooks/verify.yml

.PHONY: lab-down
lab-down: venv ## Remove the lab: containers, volumes, network, .lab/
	@docker info >/dev/null 2>&1 || { echo "no Docker engine running: nothing to remove"; exit 0; }
	ansible-playbook -i inventories/lab $(LAB_EXTRA) playbooks/lab-down.yml

.PHONY: lint
lint: venv ## yamllint, ansible-lint (production profile), ruff on the sync server
	yamllint -s .
	ansible-lint --profile production --strict
	ruff check .
	cd sync_server && ruff check . && ruff format --check .

.PHONY: packages
packages: ## Install the Debian packages the tests need (redis-server, postgresql-15)
	scripts/ensure-packages.sh

.PHONY: unit
unit: venv packages ## pytest: unit tests, and the sync server against real Redis and PostgreSQL
	pytest -q tests/unit
	cd sync_server && pytest -q -p no:cacheprovider tests

SANITY_VENV := .venv-sanity

$(SANITY_VENV)/.installed: requirements-sanity.txt
	$(PYTHON) -m venv $(SANITY_VENV)
	$(SANITY_VENV)/bin/pip install -q -r requirements-sanity.txt
	touch $@

.PHONY: sanity
sanity: $(SANITY_VENV)/.installed ## ansible-test sanity on the plugins (from a copy under ansible_collections/rtmx/ha)
	PATH=$(CURDIR)/$(SANITY_VENV)/bin:$$PATH scripts/sanity.sh

.PHONY: build
build: venv ## Build the collection tarball into build/
	mkdir -p build
	ansible-galaxy collection build --force --output-path build .

.PHONY: molecule
molecule: venv image ## molecule test: create, converge, idempotence, verify, destroy
	@rm -f .cache/molecule-verify.xml
	molecule test --all || { scripts/junit-failures.py .cache/molecule-verify.xml; exit 1; }

.PHONY: test
test: venv image ## Every test: lint, unit, build, molecule (prints durations)
	@rm -f $(TIMINGS)
	$(timed) lint $(MAKE) --no-print-directory lint
	$(timed) unit $(MAKE) --no-print-directory unit
	$(timed) sanity $(MAKE) --no-print-directory sanity
	$(timed) build $(MAKE) --no-print-directory build
	$(timed) molecule $(MAKE) --no-print-directory molecule
	@echo "== durations"; cat $(TIMINGS)

.PHONY: clean
clean: ## Remove build output and caches (not the lab)
	rm -rf build .cache .pytest_cache
