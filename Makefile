GO      ?= go
BIN     ?= bin/gdpr
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/gdpr-oss/gdpr/app.Version=$(VERSION)

.PHONY: help build run test lint bench services clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

build: ## Build the gdpr binary into bin/
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) .

services: ## Make PostgreSQL, RabbitMQ and Redis reachable locally
	@deploy/services.sh

run: services build ## Start every role in one process on local defaults
	$(BIN) all --log-format=text

test: services ## Run every test (with -race)
	$(GO) test -race -count=1 -timeout 20m ./...

lint: ## gofmt, go vet, golangci-lint
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...
	golangci-lint run ./...

bench: services ## Run the benchmarks and print figures with their ceilings
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 60m ./...

clean: ## Remove build output
	rm -rf bin var
