GO      ?= go
BIN     ?= bin/gdpr
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/gdpr-oss/gdpr/app.Version=$(VERSION)

# Tools installed with `go install` (mailpit, golangci-lint) live here.
export PATH := $(shell $(GO) env GOPATH)/bin:$(PATH)

# One package's tests may take this long; the whole of `make test` is meant
# to finish well within 20 minutes on 2 cores.
TEST_TIMEOUT ?= 15m

# How long `make fuzz` runs each fuzz target, and `make test`'s fuzz step
# (TEST_FUZZTIME: seconds, since a -fuzz build instruments each package anew;
# all seven targets took 2.5 min at 3s each on 2 quiet cores). Plain
# `go test` also runs every seed corpus (testdata/fuzz/<FuzzName>/).
FUZZTIME ?= 15s
TEST_FUZZTIME ?= 3s

.PHONY: help build run test lint bench services tools clean fuzz

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

build: ## Build the static gdpr binary into bin/
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) .

# The demo: services (left alone when they answer), a build with progress,
# a demo company, Mailpit when no SMTP server answers, and `gdpr all` on
# deploy/demo.yaml; Ctrl-C stops what it started.
run: ## Build and run a working demo on the local services (deploy/demo.sh); nothing to configure
	@BIN='$(BIN)' LDFLAGS='$(LDFLAGS)' deploy/demo.sh

# Tests that restart a whole shared service (PostgreSQL, RabbitMQ) are tagged
# `disruptive` and run afterwards, one package at a time, so they never pull
# a server from under the parallel tests.
# Every step always runs, so one CI run reports every failure.
# Tests that run the real binary as child processes share one build of it
# (GDPR_TEST_BINARY) instead of compiling it once per test.
# --for-tests: unlike `make services`, may raise a local PostgreSQL's
# max_connections (and restart it), saying so first; see deploy/services.sh.
test: tools ## Run every test with -race, then the disruptive ones serially, then each fuzz target for TEST_FUZZTIME
	@deploy/services.sh --for-tests
	@status=0; \
	bindir=$$(mktemp -d); trap 'rm -rf "$$bindir"' EXIT; \
	$(GO) build -o "$$bindir/gdpr" . || exit 1; \
	export GDPR_TEST_BINARY="$$bindir/gdpr"; \
	echo '$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...'; \
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./... || status=1; \
	echo "$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) -tags disruptive -run '^TestDisruptive' -p 1 ./..."; \
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) -tags disruptive -run '^TestDisruptive' -p 1 ./... || status=1; \
	$(MAKE) --no-print-directory fuzz FUZZTIME=$(TEST_FUZZTIME) || status=1; \
	exit $$status

# Every `func FuzzX` in a _test.go file, one at a time (go test -fuzz takes
# one target per run), for FUZZTIME each. Their seed corpora
# (testdata/fuzz/<FuzzName>/) also run in every plain `go test`. A failing
# input is written to testdata/fuzz/<FuzzName>/: commit it with the fix.
fuzz: ## Fuzz every fuzz target for FUZZTIME each (default 15s)
	@status=0; \
	for f in $$(grep -rl --include='*_test.go' '^func Fuzz' . | sort); do \
	  pkg=./$$(dirname "$${f#./}"); \
	  for name in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$$f"); do \
	    echo "$(GO) test -run '^$$' -fuzz '^$$name\$$' -fuzztime $(FUZZTIME) $$pkg"; \
	    $(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) "$$pkg" || status=1; \
	  done; \
	done; \
	exit $$status

lint: ## gofmt, go vet, golangci-lint, go.mod tidy
	@deploy/tools.sh lint
	@$(GO) mod tidy -diff || { echo "go.mod/go.sum are not tidy: run go mod tidy"; exit 1; }
	@unformatted=$$(gofmt -l $$(find . -name '*.go' -not -path './.git/*')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags disruptive ./...
	golangci-lint run ./...

# -p 1: one package at a time, so that no benchmark shares the machine with
# another and each ratio compares figures taken under the same load.
# BASELINE=<commit>: also build that commit into a temporary directory and
# run BenchmarkCPUPerAccessRequest's burst with it, alternating with this
# build (its config file must parse with the current settings).
bench: services tools ## Run the benchmarks once each and print figures next to their ceilings (BASELINE=<commit> compares a burst with an older build)
	@if [ -n "$(BASELINE)" ]; then \
	  dir=$$(mktemp -d); trap 'rm -rf "$$dir"' EXIT; \
	  git archive "$(BASELINE)" | tar x -C "$$dir" && (cd "$$dir" && $(GO) build -o "$$dir/gdpr-baseline" .) || exit 1; \
	  export GDPR_BENCH_BASELINE_BINARY="$$dir/gdpr-baseline"; \
	  echo "baseline: $(BASELINE) built into $$dir"; \
	  $(GO) test -p 1 -run '^$$' -bench . -benchtime 1x -timeout 60m ./...; \
	else \
	  $(GO) test -p 1 -run '^$$' -bench . -benchtime 1x -timeout 60m ./...; \
	fi

services: ## Make PostgreSQL, RabbitMQ and Redis reachable locally (Docker or distribution packages)
	@deploy/services.sh

tools: ## Install the tools tests need when missing (mailpit, promtool)
	@deploy/tools.sh test

clean: ## Remove build output and local report storage
	rm -rf bin var
