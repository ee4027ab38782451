# mediafleet: a Kubernetes operator for fleets of WebRTC media servers.
# `make help` lists every target.

IMG ?= mediafleet/manager:dev
MEDIASERVER_IMG ?= mediafleet/mediaserver:dev
# VERSION is stamped into the mediaserver (its /status and logs), as the
# Dockerfile does.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
MEDIASERVER_LDFLAGS = -s -w -X github.com/mediafleet/mediafleet/mediaserver/server.Version=$(VERSION)
GO ?= go
SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

LOCALBIN ?= $(CURDIR)/bin
CONTROLLER_GEN_VERSION ?= v0.23.0
KUSTOMIZE_VERSION ?= v5.8.1
CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen-$(CONTROLLER_GEN_VERSION)
KUSTOMIZE ?= $(LOCALBIN)/kustomize-$(KUSTOMIZE_VERSION)
STATICCHECK_VERSION ?= v0.8.2
STATICCHECK ?= $(LOCALBIN)/staticcheck-$(STATICCHECK_VERSION)
KUBECTL ?= kubectl

# Tests that need a real API server use KUBEBUILDER_ASSETS; when it is unset,
# hack/controlplane.sh builds kube-apiserver and etcd from source once and
# caches them under bin/.
TEST_FLAGS ?= -race -count=1 -timeout 30m

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "\nUsage:\n  make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate the CRD and RBAC manifests from markers.
	$(CONTROLLER_GEN) rbac:roleName=manager-role crd paths="./api/..." paths="./controllers/..." output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate DeepCopy methods.
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./api/..."

.PHONY: verify-generated
verify-generated: manifests generate ## Fail when generated files are stale or Go files are not gofmt-ed.
	@if [ -n "$$(gofmt -l api controllers mediaserver cmd hack)" ]; then echo "not gofmt-ed:"; gofmt -l api controllers mediaserver cmd hack; exit 1; fi
	@if [ -n "$$(git status --porcelain -- api config)" ]; then \
		echo "generated files are stale; run 'make manifests generate' and commit:"; \
		git status --porcelain -- api config; git --no-pager diff -- api config | head -50; exit 1; fi
	@for d in . hack/tools/promtool hack/tools/prometheus-operator hack/controlplane/kube hack/controlplane/etcd; do \
		(cd $$d && $(GO) mod tidy -diff >/dev/null) || { echo "go.mod/go.sum of $$d are not tidy: run go mod tidy there"; exit 1; }; done

.PHONY: fmt
fmt: ## Run go fmt.
	$(GO) fmt ./...

.PHONY: vet
vet: ## Run go vet.
	$(GO) vet ./...

.PHONY: lint
lint: $(STATICCHECK) ## staticcheck (with and without the faultinject and e2e tags) and the import rules of shared/DESIGN.md.
	$(STATICCHECK) ./...
	$(STATICCHECK) -tags faultinject ./mediaserver/... ./cmd/mediaserver/
	$(STATICCHECK) -tags e2e ./hack/e2e/
	$(GO) test -count=1 ./hack/importrules/

.PHONY: controlplane
controlplane: ## Build kube-apiserver, kube-controller-manager and etcd from source into bin/ (once).
	hack/controlplane.sh >/dev/null

.PHONY: promtool
promtool: ## Build Prometheus's promtool from source into bin/ (once).
	hack/promtool.sh >/dev/null

.PHONY: mod-download
mod-download: ## Download the Go modules the project needs (quietly; once).
	@$(GO) mod download

.PHONY: test
test: mod-download manifests generate fmt vet ## Run every test (unit, media integration, browser, envtest, promtool rules) with -race.
	hack/install-browser.sh
	@$(GO) build -o $(LOCALBIN)/testsum ./hack/testsum
	@echo "[test] go test $(TEST_FLAGS) ./... (a line per package; progress every 15 s)"
	KUBEBUILDER_ASSETS="$${KUBEBUILDER_ASSETS:-$$(hack/controlplane.sh)}" \
	PROMTOOL="$${PROMTOOL:-$$(hack/promtool.sh)}" \
	$(GO) test -json $(TEST_FLAGS) ./... 2>&1 | $(LOCALBIN)/testsum

.PHONY: test-short
test-short: ## Run the tests that need no API server or built tool (-short: envtest skips).
	$(GO) test -short -count=1 ./...

.PHONY: bench
bench: ## Run the mediaserver benchmarks (registry, setup, footprint, forwarding, HTTP, leak sampling).
	$(GO) test -run '^$$' -bench . -benchmem -cpu 1,2,8 ./mediaserver/registry/
	$(GO) test -run '^$$' -bench 'SessionSetup|Footprint' -benchtime 30x ./mediaserver/bench/
	$(GO) test -run '^$$' -bench 'Forwarding|HTTPEndpoints' -benchtime 1x -timeout 20m ./mediaserver/bench/
	$(GO) test -run '^$$' -bench . -benchmem ./mediaserver/leak/

.PHONY: bench-operator
bench-operator: manifests ## Operator at scale: 1,000 MediaServices and observing 1,000 pods (envtest, about 5 minutes).
	KUBEBUILDER_ASSETS="$${KUBEBUILDER_ASSETS:-$$(hack/controlplane.sh)}" $(GO) test -run '^$$' -bench . -benchtime 1x -timeout 20m ./controllers/benchmarks/

.PHONY: fuzz
fuzz: ## Fuzz the signalling decoders for 30s each.
	$(GO) test -run '^$$' -fuzz FuzzDecodeMessage -fuzztime 30s ./mediaserver/signal/
	$(GO) test -run '^$$' -fuzz FuzzParseTrickleFrag -fuzztime 30s ./mediaserver/signal/

##@ Build

.PHONY: build
build: manifests generate fmt vet ## Build the manager, mediaserver and mediaload binaries into bin/.
	CGO_ENABLED=0 $(GO) build -o $(LOCALBIN)/manager ./cmd/manager
	CGO_ENABLED=0 $(GO) build -o $(LOCALBIN)/mediaserver ./cmd/mediaserver
	CGO_ENABLED=0 $(GO) build -o $(LOCALBIN)/mediaload ./cmd/mediaload

.PHONY: load
load: ## Run mediaload against a local mediaserver it starts (20 publishers × 4 viewers + 12 room participants, 30 s).
	hack/load.sh

DURATION ?= 10m
.PHONY: soak
soak: ## Churn sessions against one mediaserver for DURATION (default 10m; make soak DURATION=1h): CSV, chart and verdict in bin/soak.
	$(GO) build -o $(LOCALBIN)/mediaserver ./cmd/mediaserver
	$(GO) run ./hack/soak -server $(LOCALBIN)/mediaserver -out $(LOCALBIN)/soak -duration $(DURATION)

.PHONY: run
run: manifests generate fmt vet ## Run the operator against the cluster in ~/.kube/config.
	$(GO) run ./cmd/manager --mediaserver-image=$(MEDIASERVER_IMG)

.PHONY: demo
demo: manifests ## Run the operator against a local control plane built from source and apply the samples.
	KUBEBUILDER_ASSETS="$${KUBEBUILDER_ASSETS:-$$(hack/controlplane.sh)}" $(GO) run ./hack/demo

.PHONY: run-mediaserver
run-mediaserver: ## Run one mediaserver locally (signalling on :8080, admin on :9090).
	LOG_FORMAT=text ICE_UDP_MUX_PORT=50000 $(GO) run ./cmd/mediaserver

##@ Deployment

.PHONY: install
install: manifests $(KUSTOMIZE) ## Install the CRD into the cluster in ~/.kube/config.
	$(KUSTOMIZE) build config/crd | $(KUBECTL) apply --server-side -f -

.PHONY: uninstall
uninstall: manifests $(KUSTOMIZE) ## Remove the CRD from the cluster.
	$(KUSTOMIZE) build config/crd | $(KUBECTL) delete --ignore-not-found -f -

.PHONY: deploy
deploy: manifests $(KUSTOMIZE) ## Deploy the operator (IMG, MEDIASERVER_IMG) to the cluster.
	cd config/manager && $(KUSTOMIZE) edit set image controller=$(IMG)
	$(KUSTOMIZE) build config/default | sed 's|mediafleet/mediaserver:latest|$(MEDIASERVER_IMG)|' | $(KUBECTL) apply --server-side -f -

.PHONY: undeploy
undeploy: $(KUSTOMIZE) ## Remove the operator from the cluster.
	$(KUSTOMIZE) build config/default | $(KUBECTL) delete --ignore-not-found -f -

.PHONY: build-installer
build-installer: manifests generate $(KUSTOMIZE) ## Write dist/install.yaml (CRD, RBAC, operator Deployment).
	mkdir -p dist
	cd config/manager && $(KUSTOMIZE) edit set image controller=$(IMG)
	$(KUSTOMIZE) build config/default | sed 's|mediafleet/mediaserver:latest|$(MEDIASERVER_IMG)|' > dist/install.yaml
	@echo "wrote dist/install.yaml (operator $(IMG), media pods $(MEDIASERVER_IMG))"

.PHONY: images
images: ## Build image tarballs without Docker (manager, mediaserver, e2e mediaserver under two tags, pause) into bin/images/ for `ctr images import`.
	mkdir -p $(LOCALBIN)/images
	CGO_ENABLED=0 $(GO) build -trimpath -o $(LOCALBIN)/images/manager ./cmd/manager
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(MEDIASERVER_LDFLAGS)" -o $(LOCALBIN)/images/mediaserver ./cmd/mediaserver
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(MEDIASERVER_LDFLAGS)" -tags faultinject -o $(LOCALBIN)/images/mediaserver-e2e ./cmd/mediaserver
	CGO_ENABLED=0 $(GO) build -trimpath -o $(LOCALBIN)/images/pause ./hack/pause
	$(GO) run ./hack/image -binary $(LOCALBIN)/images/manager -path /manager -tag $(IMG) -out $(LOCALBIN)/images/manager.tar
	$(GO) run ./hack/image -binary $(LOCALBIN)/images/mediaserver -path /mediaserver -tag $(MEDIASERVER_IMG) -out $(LOCALBIN)/images/mediaserver.tar
	$(GO) run ./hack/image -binary $(LOCALBIN)/images/mediaserver-e2e -path /mediaserver -tag mediafleet/mediaserver:e2e -out $(LOCALBIN)/images/mediaserver-e2e.tar
	$(GO) run ./hack/image -binary $(LOCALBIN)/images/mediaserver-e2e -path /mediaserver -tag mediafleet/mediaserver:e2e-next -out $(LOCALBIN)/images/mediaserver-e2e-next.tar
	$(GO) run ./hack/image -binary $(LOCALBIN)/images/pause -path /pause -tag mediafleet/pause:dev -out $(LOCALBIN)/images/pause.tar

.PHONY: docker-build
docker-build: ## Build both images with a Docker engine (not available on CI machines).
	docker build --target manager -t $(IMG) .
	docker build --target mediaserver -t $(MEDIASERVER_IMG) .

##@ Local cluster

# MONITORING=0 leaves the monitoring stack (Prometheus Operator, Prometheus,
# Alertmanager, webhook receiver; hack/monitoring.sh) out of make dev.
MONITORING ?= 1
export MONITORING

.PHONY: dev
dev: ## Start a single-node Kubernetes built from source (root) with the operator in-cluster, the monitoring stack (MONITORING=0: without) and a sample serving.
	hack/dev.sh

.PHONY: dev-down
dev-down: ## Stop the local cluster: every process by pid, mounts, interfaces, iptables chains and state.
	hack/cluster.sh down

.PHONY: test-e2e
test-e2e: ## Run the end-to-end suite (hack/e2e) on the local cluster, starting it with make dev when needed.
	hack/dev.sh
	KUBECONFIG=$(LOCALBIN)/dev/kubeconfig $(GO) test -race -tags e2e -count=1 -v -timeout 30m ./hack/e2e/

E2E_REPEAT ?= 10
.PHONY: test-e2e-repeat
test-e2e-repeat: ## Run the end-to-end suite N times in a row on one cluster (N=10 by default: make test-e2e-repeat N=3); stops at the first failure.
	hack/e2e-repeat.sh $(or $(N),$(E2E_REPEAT))

##@ Tools

$(LOCALBIN):
	mkdir -p $(LOCALBIN)

$(CONTROLLER_GEN): | $(LOCALBIN)
	$(call go-install-tool,$(CONTROLLER_GEN),sigs.k8s.io/controller-tools/cmd/controller-gen,$(CONTROLLER_GEN_VERSION))

$(KUSTOMIZE): | $(LOCALBIN)
	$(call go-install-tool,$(KUSTOMIZE),sigs.k8s.io/kustomize/kustomize/v5,$(KUSTOMIZE_VERSION))

$(STATICCHECK): | $(LOCALBIN)
	$(call go-install-tool,$(STATICCHECK),honnef.co/go/tools/cmd/staticcheck,$(STATICCHECK_VERSION))

# go-install-tool installs a pinned Go tool into bin/ under a versioned name.
define go-install-tool
@[ -f "$(1)" ] || { \
set -e; \
echo "installing $(2)@$(3) into $(LOCALBIN)"; \
tmp=$$(mktemp -d); \
GOBIN=$$tmp $(GO) install $(2)@$(3); \
mv $$tmp/* $(1); \
rm -rf $$tmp; \
}
endef
