# make test: vet, the race-enabled unit and integration tests (against a real
# local MariaDB primary + replica and a 3-node Galera cluster that it
# starts), the MySQL 8 performance_schema emulation tests of the nested
# module, the Prometheus collector's (promthrottler, a module of its own so
# that the root needs no Prometheus client), the Doorman module's (against an
# in-process Doorman server), and a short fuzzing pass over every parser of
# server output (make fuzz FUZZTIME=5m for longer).
# make demo: the example copier, throttled by real replica lag.
# make bench-pacing: the lag each throttler mode holds against a replica with
# a capped apply rate (about 10 minutes; BENCH_PACING_FLAGS for one cell).

GO ?= go
STATICCHECK_VERSION := v0.8.2
BIN := $(CURDIR)/.bin
export THROTTLER_TESTENV_DIR ?= $(or $(TMPDIR),/tmp)/throttler-testenv
REPLICAPAIR := $(GO) run ./internal/testenv/cmd/replicapair

.PHONY: test unit integration mysql8 vet lint bench bench-pacing demo replica-up replica-down fuzz

# The fuzz targets (fuzz_test.go); go test -fuzz takes one per run.
FUZZ_TARGETS := FuzzParseFlavor FuzzReplicaStatus FuzzGTIDSets FuzzPerformanceSchemaLag \
	FuzzHeartbeat FuzzAuroraLag FuzzParseReplicaHosts FuzzLoadParseValue FuzzQueryNumber FuzzGaleraStatus
FUZZTIME ?= 2s

test: vet replica-up
	THROTTLER_TESTENV_REQUIRED=1 $(GO) test -race -count=1 ./...
	cd internal/mysql8test && $(GO) test -race -count=1 ./...
	cd promthrottler && $(GO) test -race -count=1 ./...
	cd doorman && $(GO) test -race -count=1 ./...
	$(MAKE) fuzz

# fuzz runs each target for FUZZTIME; a failure leaves its input in
# testdata/fuzz/<target>/, where it then runs as a unit test: commit it.
# go test -fuzz takes one target per run and links an instrumented binary
# each time, so the binary is built once and run per target, in the package
# directory (for testdata/fuzz) with go test's own corpus cache.
FUZZBIN := $(BIN)/throttler.fuzz.test
fuzz:
	@$(GO) test -c -fuzz=. -o $(FUZZBIN) .
	@cache=$$($(GO) env GOCACHE)/fuzz/github.com/throttlekit/throttler; \
	for t in $(FUZZ_TARGETS); do \
		echo "fuzz $$t ($(FUZZTIME))"; \
		out=$$(THROTTLER_TESTENV_DIR= $(FUZZBIN) -test.run '^$$' -test.fuzz "^$$t\$$" -test.fuzztime $(FUZZTIME) -test.fuzzcachedir "$$cache" 2>&1) || { echo "$$out"; exit 1; }; \
	done

# unit runs what needs no server; integration tests skip with a message.
unit:
	THROTTLER_TESTENV_DIR= $(GO) test -race -count=1 ./...
	cd promthrottler && $(GO) test -race -count=1 ./...
	cd doorman && $(GO) test -race -count=1 ./...

vet:
	$(GO) vet ./...
	cd internal/mysql8test && $(GO) vet ./...
	cd promthrottler && $(GO) vet ./...
	cd doorman && $(GO) vet ./...

lint: vet $(BIN)/staticcheck
	@out=$$(gofmt -l . ); if [ -n "$$out" ]; then echo "gofmt wants to rewrite:"; echo "$$out"; exit 1; fi
	$(BIN)/staticcheck ./...
	cd internal/mysql8test && $(BIN)/staticcheck ./...
	cd promthrottler && $(BIN)/staticcheck ./...
	cd doorman && $(BIN)/staticcheck ./...

$(BIN)/staticcheck:
	GOBIN=$(BIN) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

# Not part of test: it takes minutes. It starts the pair if it is not up.
bench-pacing:
	$(GO) run ./internal/benchpacing -dir "$(THROTTLER_TESTENV_DIR)" $(BENCH_PACING_FLAGS)

# The pair, and the 3-node Galera cluster the Galera tests use (about 12s
# more the first time; reused while it runs). replica-down stops both.
replica-up:
	$(REPLICAPAIR) up -galera -dir "$(THROTTLER_TESTENV_DIR)"

replica-down:
	$(REPLICAPAIR) down -dir "$(THROTTLER_TESTENV_DIR)"

demo:
	$(GO) run ./examples/copier
