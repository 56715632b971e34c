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

$(VENV)/.installed: requirements-pip.txt requirements.txt requirements-dev.txt sync_server/pyproject.toml
	PYTHON=$(PYTHON) scripts/ensure-packages.sh @venv
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements-pip.txt
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

# lab, drill, lab-down, molecule and test use the machine's one Docker engine:
# each runs its "-locked" twin, prerequisites included, in a sub-make under
# the machine-wide lab lock, so a second run refuses at once instead of
# destroying the first. Nested makes inside a locked run pass.
.PHONY: lab lab-locked
lab: ## Create the container lab and converge site.yml on it
	@scripts/lab-lock.sh $(MAKE) --no-print-directory $@-locked
lab-locked: venv image
	ansible-playbook -i inventories/lab $(LAB_EXTRA) playbooks/lab.yml

.PHONY: drill drill-locked
drill: ## Run every failover drill against the lab (make lab first); DRILL_ARGS='-e chaos_faults=10'
	@scripts/lab-lock.sh $(MAKE) --no-print-directory $@-locked
drill-locked: venv
	@test -f .lab/connection.env || $(MAKE) --no-print-directory lab
	ansible-playbook -i inventories/lab playbooks/failover-drill.yml $(DRILL_ARGS)

.PHONY: bench-sync bench-sync-locked
bench-sync: ## Benchmark the sync tier on the lab (make lab first; not a test); BENCH_ARGS='--clients 300 --spread mixed'
	@scripts/lab-lock.sh $(MAKE) --no-print-directory $@-locked
bench-sync-locked: venv
	@test -f .lab/connection.env || { echo "no .lab/connection.env: run make lab first" >&2; exit 1; }
	python scripts/bench_sync.py $(BENCH_ARGS)

.PHONY: verify
verify: venv ## Verify the lab's whole stack (rtmx.ha.ha_verify)
	ansible-playbook -i inventories/lab playbooks/verify.yml

.PHONY: lab-down lab-down-locked
lab-down: ## Remove the lab: containers, volumes, network, .lab/
	@scripts/lab-lock.sh $(MAKE) --no-print-directory $@-locked
lab-down-locked: venv
	@docker info >/dev/null 2>&1 || { echo "no Docker engine running: nothing to remove"; exit 0; }
	ansible-playbook -i inventories/lab $(LAB_EXTRA) playbooks/lab-down.yml

.PHONY: lab-lifecycle lab-lifecycle-locked
lab-lifecycle: ## lab-up.yml twice and lab-down.yml on a separate test lab (what `make lab`/`lab-down` run)
	@scripts/lab-lock.sh $(MAKE) --no-print-directory $@-locked
lab-lifecycle-locked: venv image
	pytest -q -p no:cacheprovider tests/lab

.PHONY: lint
lint: venv ## yamllint, ansible-lint (production profile), ruff, changelog fragments
	yamllint -s .
	ansible-lint --profile production --strict
	ruff check .
	antsibull-changelog lint
	cd sync_server && ruff check . && ruff format --check .

.PHONY: packages
packages: ## Install the Debian packages the tests need (redis-server, postgresql-15, pgbouncer, promtool, amtool, pgbackrest)
	scripts/ensure-packages.sh @tests

.PHONY: unit
unit: venv packages ## pytest: unit tests, and the sync server against real Redis and PostgreSQL
	pytest -q tests/unit
	cd sync_server && pytest -q -p no:cacheprovider tests

SANITY_VENV := .venv-sanity

$(SANITY_VENV)/.installed: requirements-pip.txt requirements-sanity.txt
	PYTHON=$(PYTHON) scripts/ensure-packages.sh @venv
	$(PYTHON) -m venv $(SANITY_VENV)
	$(SANITY_VENV)/bin/pip install -q -r requirements-pip.txt
	$(SANITY_VENV)/bin/pip install -q -r requirements-sanity.txt
	touch $@

.PHONY: sanity
sanity: $(SANITY_VENV)/.installed ## ansible-test sanity on the plugins (from a copy under ansible_collections/rtmx/ha)
	PATH=$(CURDIR)/$(SANITY_VENV)/bin:$$PATH scripts/sanity.sh

.PHONY: build
build: venv ## Build the collection tarball into build/
	mkdir -p build
	ansible-galaxy collection build --force --output-path build .

.PHONY: molecule molecule-locked
molecule: ## molecule test: create, converge, verify (idempotence after the drills), destroy
	@scripts/lab-lock.sh $(MAKE) --no-print-directory $@-locked
molecule-locked: venv image
	@rm -f .cache/molecule-verify.xml
	molecule test --all; status=$$?; scripts/junit-failures.py .cache/molecule-verify.xml; exit $$status

.PHONY: test test-locked
test: ## Every test: lint, unit, build, molecule (prints durations)
	@scripts/lab-lock.sh $(MAKE) --no-print-directory $@-locked
test-locked: venv image
	@rm -f $(TIMINGS)
	$(timed) lint $(MAKE) --no-print-directory lint
	$(timed) unit $(MAKE) --no-print-directory unit
	$(timed) sanity $(MAKE) --no-print-directory sanity
	$(timed) build $(MAKE) --no-print-directory build
	$(timed) lab-lifecycle $(MAKE) --no-print-directory lab-lifecycle
	$(timed) molecule $(MAKE) --no-print-directory molecule
	@echo "== durations"; cat $(TIMINGS)

.PHONY: clean
clean: ## Remove build output and caches (not the lab)
	rm -rf build .cache .pytest_cache
