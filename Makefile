# Two entry points that work on a fresh machine (Debian with python3 >= 3.11, node and npm):
#   make demo   set up and run the whole system on this machine (`rotor demo`; no cluster needed)
#   make test   set up and run every check and test that CI runs
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: demo test setup setup-dev system-deps lint check pytest pytest-real images base-image generate kube-bin node-deps e2e

# The real Kubernetes control plane's binaries (rotorctl/realkube.py), built from their Go
# modules by tools/kube/build.sh into a cache outside the checkout (${ROTOR_KUBE_CACHE:-
# ~/.cache/rotor-kube}), reused while tools/kube is unchanged. KUBE_ONLY= (empty) builds every
# binary tools/kube knows (the node's kubelet, containerd and helm too).
GO_PATH_DIR ?= /usr/local/go/bin
KUBE_ONLY ?= etcd kube-apiserver kube-controller-manager kube-scheduler kubectl

# Images (docs/install.md, "Building the images"): `make images` builds rotor-controller and
# rotor-agent with podman or docker (whichever is installed) on the official Python image.
# Without a registry, `make images LOCAL_BASE=1` first builds that base from Debian's packages
# (debootstrap; root) and uses the podman settings in tests/images/containers.conf.
ENGINE ?= $(shell command -v podman 2>/dev/null || command -v docker 2>/dev/null)
IMAGE_PREFIX ?= localhost/
IMAGE_TAG ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
PYTHON_IMAGE ?= python:3.11-slim-bookworm
LOCAL_BASE ?=
BASE_IMAGE ?= localhost/rotor-python:3.11-bookworm
DEBIAN_MIRROR ?= $(shell sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)
BUILD_FLAGS ?=
ifneq ($(LOCAL_BASE),)
PYTHON_IMAGE := $(BASE_IMAGE)
# podman: never pull (nothing to pull from), host network for pip, the machine's CA bundle
BUILD_FLAGS += --pull=never --network host --volume /etc/ssl/certs:/etc/ssl/certs:ro
export CONTAINERS_CONF ?= $(CURDIR)/tests/images/containers.conf
endif

$(BIN)/python:
	@echo "creating the virtual environment $(VENV)/ ($(PY) -m venv)"
	@$(PY) -m venv $(VENV)

# Skipped when pyproject.toml has not changed since the last install (a second `make demo`
# starts at once). The venv's own pip is used as it comes (3.11's supports editable installs):
# upgrading it first cost up to 25 s; --no-compile leaves the bytecode to the first import
# (compiling all of kubernetes' modules was most of pip's time).
$(VENV)/.setup-demo: pyproject.toml | $(BIN)/python
	@echo "installing Rotor and the demo's dependencies into $(VENV)/ (pip install -e '.[demo]'; about a minute the first time)"
	@$(PY) tools/pip_progress.py $(VENV)/pip.log $(BIN)/pip install --no-compile -e '.[demo]'
	@touch $@

setup: $(VENV)/.setup-demo

setup-dev: $(BIN)/python system-deps
	$(BIN)/pip install -q -e '.[dev]'

# Real servers and compilers the tests use: promtool and prometheus (Debian), moc (npm),
# podman, runc and debootstrap (Debian; tests/images builds and runs the images), PostgreSQL
# (Debian; tests/postgres and bench/database_rotation.py start their own server).
system-deps:
	@if command -v podman >/dev/null 2>&1 && command -v runc >/dev/null 2>&1 && command -v debootstrap >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" != 0 ]; then \
	  echo "NOTE: podman, runc or debootstrap missing and not root: not installing them; tests/images will skip"; \
	else \
	  echo "installing Debian packages podman runc debootstrap"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends podman runc debootstrap >/dev/null) \
	  || echo "WARNING: could not install podman/runc/debootstrap; tests/images will skip"; fi
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" != 0 ]; then \
	  echo "NOTE: postgresql missing and not root: not installing it; tests/postgres will skip"; \
	else \
	  echo "installing Debian package postgresql"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null) \
	  || echo "WARNING: could not install postgresql; tests/postgres will skip"; fi
	@command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || { \
	  echo "installing Debian package prometheus"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null) \
	  || echo "WARNING: could not install prometheus (not root?); its tests will skip locally"; }
	@if [ -f canister/package.json ]; then npm ci --prefix canister --no-audit --no-fund --loglevel=error; fi

# `make demo ARGS="--duration 1m --rotate-every 10s"` passes flags to `rotor demo`.
ARGS ?=
# One build at a time per cache (flock): two at once raced on the same NAME.tmp (seen here: the
# second `mv` failed with no "kube-bin: FAILED" line); the one waiting then skips what exists.
KUBE_CACHE := $(or $(ROTOR_KUBE_CACHE),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/rotor-kube)
kube-bin:
	@start=$$(date +%s); mkdir -p "$(KUBE_CACHE)"; \
	PATH="$$PATH:$(GO_PATH_DIR)" ROTOR_KUBE_ONLY="$(KUBE_ONLY)" \
	  flock "$(KUBE_CACHE)/.build.lock" tools/kube/build.sh || exit 1; \
	echo "kube-bin: done in $$(( $$(date +%s) - start )) s"

# The end-to-end tier (tests/e2e/README.md), as CI runs it: every binary of tools/kube (the
# control plane, the node's kubelet, kube-proxy, containerd, and helm), Rotor's images on the
# Debian base, then the suite on the source-built cluster (root; nothing is downloaded but Go
# modules, PyPI and Debian packages). ROTOR_E2E_CLUSTER=kind runs it on kind instead.
NODE_DEBS := runc containernetworking-plugins iptables conntrack gcc libc6-dev
node-deps:
	@missing=$$(for p in $(NODE_DEBS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then echo "installing Debian packages $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; fi

e2e: setup-dev node-deps
	$(MAKE) kube-bin KUBE_ONLY=
	$(MAKE) images LOCAL_BASE=1
	@start=$$(date +%s); \
	ROTOR_E2E=1 $(BIN)/python -m pytest -m e2e tests/e2e -v -rs -p no:cacheprovider; rc=$$?; \
	echo "e2e tier: $$(( $$(date +%s) - start )) s"; exit $$rc

demo: setup
	$(BIN)/rotor demo $(ARGS)

lint: setup-dev
	@start=$$(date +%s); \
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy && $(BIN)/lint-imports; rc=$$?; \
	echo "tier lint (ruff, ruff format, mypy, lint-imports): $$(( $$(date +%s) - start )) s"; exit $$rc

# Generated product files, from their one source: crds/ from rotor/crd.py, then the chart's
# copies of them and docs/values.md (tools/generate.py). tests/chart/test_generated.py and
# tests/controller/test_crd.py fail when a committed file is stale.
generate: setup-dev
	$(BIN)/python -m rotor.crd --write crds
	$(BIN)/python -m tools.generate

# CI's tiers, each printing its time: every test (tests/system on the emulator; the real control
# plane's own tests in tests/system/test_realkube.py), then tests/system again on the real
# control plane (`pytest --kube=real`, or ROTOR_TEST_KUBE=real).
pytest: setup-dev
	@start=$$(date +%s); $(BIN)/python -m pytest -q; rc=$$?; \
	echo "tier pytest (all tests, system tests on the emulator): $$(( $$(date +%s) - start )) s"; exit $$rc

pytest-real: setup-dev kube-bin
	@start=$$(date +%s); \
	$(BIN)/python -m pytest -q --kube=real tests/system --ignore=tests/system/test_realkube.py; rc=$$?; \
	echo "tier pytest-real (tests/system on the real control plane): $$(( $$(date +%s) - start )) s"; exit $$rc

test: lint kube-bin pytest pytest-real e2e

images: $(if $(LOCAL_BASE),base-image)
	@test -n "$(ENGINE)" || { echo "make images: neither podman nor docker is installed (apt-get install podman runc)"; exit 1; }
	$(ENGINE) build $(BUILD_FLAGS) --build-arg PYTHON_IMAGE=$(PYTHON_IMAGE) \
	  -f Dockerfile.controller -t $(IMAGE_PREFIX)rotor-controller:$(IMAGE_TAG) .
	$(ENGINE) build $(BUILD_FLAGS) --build-arg PYTHON_IMAGE=$(PYTHON_IMAGE) \
	  -f Dockerfile.agent -t $(IMAGE_PREFIX)rotor-agent:$(IMAGE_TAG) .
	@echo "built $(IMAGE_PREFIX)rotor-controller:$(IMAGE_TAG) and $(IMAGE_PREFIX)rotor-agent:$(IMAGE_TAG)"

# The official python:3.11-slim-bookworm rebuilt from Debian's packages: the same Debian release
# and its Python 3.11 (/usr/bin/python3, with /usr/bin/python). Built once; `podman rmi` it to
# rebuild. Needs root, debootstrap and podman (or docker).
base-image:
	@if $(ENGINE) image inspect $(BASE_IMAGE) >/dev/null 2>&1; then echo "base image $(BASE_IMAGE) exists"; else \
	  test "$$(id -u)" = 0 || { echo "make base-image: debootstrap needs root"; exit 1; }; \
	  command -v debootstrap >/dev/null || { echo "make base-image: apt-get install debootstrap podman runc"; exit 1; }; \
	  root=$$(mktemp -d) && trap 'rm -rf "$$root"' EXIT && \
	  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$$root" $(or $(DEBIAN_MIRROR),http://deb.debian.org/debian) >/dev/null && \
	  ln -sf python3 "$$root/usr/bin/python" && rm -rf "$$root"/var/cache/apt/archives/*.deb "$$root"/var/lib/apt/lists/* && \
	  tar -C "$$root" -c . | $(ENGINE) import --change 'CMD ["python3"]' - $(BASE_IMAGE) >/dev/null && \
	  echo "built base image $(BASE_IMAGE)"; fi
