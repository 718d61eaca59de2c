# farego — offline QR fare payment for buses.
# Run `make help` for the list of targets.

GO        ?= go
PKGS      ?= ./...
BIN       ?= bin
DIST      ?= dist
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X github.com/farego/farego/agent.Version=$(VERSION) -X github.com/farego/farego/agent.VersionStamp=farego-version:$(VERSION)/ -X github.com/farego/farego/agent.BuildDate=$(shell date -u +%F)
FUZZTIME  ?= 5s
BENCHTIME ?= 1s
# staticcheck runs at this pinned version through the Go module proxy (the
# newest that builds with Go 1.26); `make lint` downloads it once.
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2

# Binaries built by `make build`; the device binary is the only one `dist` cross-builds.
CMDS := farego-validator farego-settlement farego-rider farego-provision farego-demo farego-sim

.PHONY: help build test test-arm bench bench-all fuzz lint dist deb demo vendor-wallet clean

# The device-side packages: what runs on the validator.
DEVICE_PKGS := ./agent/... ./queue/... ./driver/... ./sync/wire/... ./sync/uplink/... ./sync/update/... ./sync/internal/...

help: ## show this help
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-14s %s\n", $$1, $$2}'

build: ## build every binary into ./bin
	@mkdir -p $(BIN)
	@for c in $(CMDS); do if [ -d cmd/$$c ]; then echo "go build -o $(BIN)/$$c ./cmd/$$c"; $(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/$$c ./cmd/$$c || exit 1; fi; done

test: ## run all tests with the race detector (embedded parts only unless FAREGO_TEST_* are set)
	$(GO) test -race -count=1 -timeout 20m $(PKGS)

test-arm: ## run the device-side tests built for linux/arm (GOARM=7) and linux/arm64 under qemu-user-static
	FAREGO_QEMU=1 CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=7 $(GO) test -count=1 -timeout 15m -exec qemu-arm-static $(DEVICE_PKGS)
	FAREGO_QEMU=1 CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) test -count=1 -timeout 15m -exec qemu-aarch64-static $(DEVICE_PKGS)

bench: ## run the headline benchmarks and print them beside their floors (raw output in bench.out)
	@./.ci/bench

bench-all: ## run every benchmark in the module
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) $(PKGS)

fuzz: ## run every fuzz target for FUZZTIME each (default 5s)
	@./.ci/fuzz $(FUZZTIME)

lint: ## gofmt check, go vet and staticcheck
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) run $(STATICCHECK) $(PKGS)

dist: ## static linux/arm (GOARM=7) and linux/arm64 builds of farego-validator, with a sample config and the systemd unit
	@mkdir -p $(DIST)
	CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=7 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(DIST)/linux-armv7/farego-validator ./cmd/farego-validator
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(DIST)/linux-arm64/farego-validator ./cmd/farego-validator
	@mkdir -p $(DIST)/share
	cp testdata/validator/validator.toml $(DIST)/share/validator.toml.sample
	cp cmd/farego-provision/farego-validator.service $(DIST)/share/
	@ls -l $(DIST)/*/farego-validator $(DIST)/share/*
	@echo "device bundles (keys, certificates, config, keyring, fares, unit): farego-provision device --help"

deb: dist ## .deb packages of farego-validator for armhf and arm64 in dist/ (binary, systemd unit, sysusers entry, udev rules, sample config), read back and checked
	$(GO) run ./cmd/internal/mkdeb --version '$(VERSION)' --out $(DIST) \
		--binary armhf=$(DIST)/linux-armv7/farego-validator --binary arm64=$(DIST)/linux-arm64/farego-validator

demo: build ## run the whole system on this machine (server, validator on a pty, riders) and narrate it; DEMO_FLAGS=--keep leaves the server and its wallet up
	./$(BIN)/farego-demo --bin $(BIN) $(DEMO_FLAGS)

vendor-wallet: ## re-vendor the wallet's pinned QR encoder (npm pack, checksums checked) into server/wallet/static/vendor
	@./.ci/vendor-wallet

clean: ## remove build output
	rm -rf $(BIN) $(DIST)
