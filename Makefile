# The two commands a newcomer needs: `make demo` and `make test`. Everything else is for developers.
SHELL := /bin/bash
CARGO ?= cargo
BIN := target/debug/unified-connectors

.PHONY: all build test unit crds crds-check lint fmt deny argocd-test control-plane cluster-up cluster-down e2e bench bench-collector bench-operator demo helm-lint clean

all: build

build:
	$(CARGO) build --workspace --bins

## make test: unit and integration tests, CRD drift check, lints, the dependency licence and advisory
## check, the Argo CD health check and Helm chart checks, then the end-to-end suite on a real control plane.
test: unit crds-check lint deny argocd-test helm-lint e2e

## Licences, bans and sources of every dependency (deny.toml); RustSec advisories from a cached
## database, skipped with a message when none is cached (installs cargo-deny if missing).
deny:
	e2e/scripts/deny.sh

## The Argo CD Lua health check against sample statuses (installs lua5.4 if missing).
argocd-test:
	config/argocd/test.sh

unit:
	$(CARGO) test --workspace

# Copies of crds/ that Helm and kustomize need inside their own trees. The chart renders its copy from
# templates/crds.yaml (not from a crds/ folder, which Helm would never upgrade).
CRD_COPIES := charts/unified-connectors/files/crds config/crd/bases

## Regenerate crds/ and its copies from the Rust types.
crds: build
	$(BIN) crds --out-dir crds
	for d in $(CRD_COPIES); do rm -rf $$d && mkdir -p $$d && cp crds/*.yaml $$d/; done

## Fail when crds/ (or a copy) differs from what the code generates.
crds-check: build
	@tmp=$$(mktemp -d); $(BIN) crds --out-dir $$tmp; stale=0; \
	for d in crds $(CRD_COPIES); do diff -ru $$d $$tmp || stale=1; done; rm -rf $$tmp; \
	if [ $$stale = 1 ]; then echo "crds/ or a copy is stale: run 'make crds' and commit the result" >&2; exit 1; fi; \
	echo "crds/ and its copies are up to date"

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## Build etcd, kube-apiserver, kube-controller-manager (and helm, kstatus) from Go modules, cached by version.
control-plane:
	e2e/scripts/build-control-plane.sh

cluster-up: control-plane
	e2e/scripts/cluster.sh up

cluster-down:
	e2e/scripts/cluster.sh down

e2e: control-plane build
	e2e/scripts/run-e2e.sh

bench: bench-collector bench-operator

bench-collector:
	$(CARGO) run --release -p unified-connectors --example bench_collector

bench-operator: control-plane
	e2e/scripts/bench-operator.sh

helm-lint: control-plane
	e2e/scripts/helm.sh lint

demo: control-plane build
	e2e/scripts/demo.sh

clean:
	$(CARGO) clean
