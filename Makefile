# Hookstream: every target works on a fresh Debian machine with Go. Tools the
# targets need (protoc, redis-server, kcat) are installed with apt when they are
# missing and we are root; otherwise the tests that need them print a loud SKIP,
# except under CI=true where a missing tool fails the run.

SHELL := /bin/bash
MODULES := pkg proto services/ingest services/evaluator services/timer services/dispatcher services/hookstream tools/charttest
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_VERSION := 3.21
BIN := $(CURDIR)/bin
GO_TEST_FLAGS ?= -race -count=1 -timeout 20m -short
APT_TOOLS := redis-server:redis-server kcat:kcat
HELM_VERSION := v3.22.0
IMAGE ?= hookstream:dev
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show this help.
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

.PHONY: run
run: ## Run every service in one process on embedded Kafka (127.0.0.1:9092) and Redis, with the examples.
	go run ./services/hookstream dev -f examples/

.PHONY: demo
demo: ## Run dev with the examples, replay a scripted stream for all six trigger types, print webhooks and stats (< 2 min).
	go run ./services/hookstream demo --examples examples

.PHONY: build
build: ## Build the hookstream binary into ./bin.
	go build -o $(BIN)/hookstream ./services/hookstream

.PHONY: tools
tools: ## Install redis-server and kcat with apt when missing (root only).
	@for pair in $(APT_TOOLS); do \
	  cmd=$${pair%%:*}; pkg=$${pair##*:}; \
	  if ! command -v $$cmd >/dev/null 2>&1; then \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	      echo "installing $$pkg with apt"; \
	      (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$pkg >/dev/null || exit 1; \
	    else \
	      echo "SKIP: $$cmd is missing and cannot be installed (not root or no apt): tests that need it will be skipped"; \
	      if [ "$$CI" = "true" ]; then echo "FAIL: CI=true and $$cmd is missing"; exit 1; fi; \
	    fi; \
	  fi; \
	done

.PHONY: test
test: tools chart-tools ## Run every module's tests with -race and -short (starts kfake, redis-server and receivers itself).
	go test $(GO_TEST_FLAGS) $(shell go list -m -f '{{.Dir}}/...' | sed 's|$(CURDIR)/|./|')

.PHONY: chart-tools
chart-tools: ## Install helm into ./bin (go install: about 2 minutes and 1 GB the first time) and docker-compose (apt) when missing.
	@if ! go version -m $(BIN)/helm 2>/dev/null | grep -q 'helm.sh/helm/v3[[:space:]]*$(HELM_VERSION)'; then \
	  echo "installing helm $(HELM_VERSION) into $(BIN) with go install (about 2 minutes and 1 GB of memory the first time)"; \
	  GOBIN=$(BIN) go install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION) || { \
	    echo "SKIP: helm could not be installed: the chart tests will be skipped"; \
	    if [ "$$CI" = "true" ]; then echo "FAIL: CI=true and helm is missing"; exit 1; fi; }; \
	fi
	@$(MAKE) --no-print-directory tools APT_TOOLS=docker-compose:docker-compose

.PHONY: chart-test
chart-test: chart-tools ## Test charts/hookstream and docker-compose.yml (lint, golden renders, strict decoding, schema, compose config).
	go test -count=1 ./tools/charttest/...

.PHONY: image
image: ## Build the container image (IMAGE=hookstream:dev) with docker build; needs a Docker engine.
	@if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then \
	  docker build -t $(IMAGE) --build-arg VERSION=$(VERSION) .; \
	else \
	  echo "make image: no Docker engine here (docker is missing or docker info fails): build where Docker runs with"; \
	  echo "  docker build -t $(IMAGE) --build-arg VERSION=$(VERSION) ."; exit 1; \
	fi

.PHONY: e2e
e2e: tools ## The full end-to-end suite: every scenario on the all-in-one and on four service processes, the timer crash with 100,000 pending, stats across kills of every service (make test runs short forms of the suite and the crash test).
	go test -race -count=1 -timeout 60m -v -run 'TestSuite|TestTimerCrashFiresEveryTimerOnce|TestStatsSurviveServiceRestarts' ./services/hookstream/e2e/

CHAOS_SEED ?= 0
CHAOS_DURATION ?= 3m
.PHONY: chaos
chaos: tools ## Fault injection over four service processes: >= 20 faults of every kind; CHAOS_SEED=N repeats a run, CHAOS_LOGS=DIR keeps the logs (make test runs a short form).
	go test -race -count=1 -timeout 40m -v -run '^TestChaos$$' ./services/hookstream/e2e/ -args -chaos.full -chaos.seed=$(CHAOS_SEED) -chaos.duration=$(CHAOS_DURATION) $(if $(CHAOS_LOGS),-chaos.logs=$(CHAOS_LOGS))

LOAD_FLAGS ?=
.PHONY: load
load: tools ## Load: 5,000 events/s for 5 min through four service processes, without -race; latency, lag, RSS (LOAD_FLAGS='-load.rate=2000 -load.duration=15m'; make test runs a short form).
	go test -count=1 -timeout 60m -v -run '^TestLoad$$' ./services/hookstream/e2e/ -args $(LOAD_FLAGS)

.PHONY: bench
bench: tools ## Run the benchmarks and print figures.
	go test -run '^$$' -bench . -benchmem -count=1 $(shell go list -m -f '{{.Dir}}/...' | sed 's|$(CURDIR)/|./|')

.PHONY: protoc
protoc:
	@if ! command -v protoc >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends protobuf-compiler >/dev/null; \
	  else echo "protoc is missing: apt-get install protobuf-compiler"; exit 1; fi; fi
	@protoc --version | grep -q 'libprotoc $(PROTOC_VERSION)' || { echo "want protoc $(PROTOC_VERSION).x (Debian protobuf-compiler), have $$(protoc --version)"; exit 1; }
	@GOBIN=$(CURDIR)/proto/.bin go install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)

FUZZTIME ?= 2m
# Go 1.26's fuzz coordinator can fail a target with a bare "context deadline
# exceeded" when -fuzztime expires mid-run (golang/go#75804, fixed in 1.27), so
# fuzzing runs on a pinned 1.27 toolchain (downloaded through the module proxy).
FUZZ_GOTOOLCHAIN ?= go1.27.1
.PHONY: fuzz
fuzz: ## Run every fuzz target for FUZZTIME each (default 2m; CI runs 10s).
	@set -e; for f in $$(grep -rl --include='*_test.go' '^func Fuzz' pkg services); do \
	  dir=$$(dirname $$f); \
	  for t in $$(grep -o '^func Fuzz[A-Za-z0-9_]*' $$f | sed 's/^func //'); do \
	    echo "== $$dir $$t ($(FUZZTIME))"; \
	    GOTOOLCHAIN=$(FUZZ_GOTOOLCHAIN) go test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 5s ./$$dir || exit 1; \
	  done; \
	done

.PHONY: proto
proto: protoc ## Regenerate the Go code for proto/ (committed).
	cd proto && protoc --plugin=protoc-gen-go=$(CURDIR)/proto/.bin/protoc-gen-go \
	  --go_out=. --go_opt=module=github.com/hookstream/hookstream/proto \
	  -I . hookstream/v1/*.proto

.PHONY: proto-check
proto-check: proto ## Fail when the committed generated code is stale.
	@git diff --exit-code -- proto/ || { echo "generated protobuf code is stale: run make proto and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- proto/ | grep -v '^??.*\.bin')" || { git status --porcelain -- proto/; echo "untracked generated files: run make proto and commit"; exit 1; }

.PHONY: lint
lint: ## gofmt and go vet over every module.
	@out=$$(gofmt -l $(MODULES)); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go vet $(shell go list -m -f '{{.Dir}}/...' | sed 's|$(CURDIR)/|./|')

.PHONY: tidy
tidy: ## go mod tidy in every module.
	@for m in $(MODULES); do (cd $$m && go mod tidy) || exit 1; done
