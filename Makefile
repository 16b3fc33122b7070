# godwit: every target delegates to scripts/ (bash) and Go.
# `make test` is the single test command; see scripts/test.sh for its knobs.

# Static binaries: they also run inside the nested host, which has no libc.
export CGO_ENABLED := 0

.PHONY: all build test unit integration demo fuzz fuzz-long nested-qemu-check clean

all: build

## build: the godwit binary and the nested-host harness into bin/
build:
	mkdir -p bin
	go build -o bin/godwit ./cmd/godwit
	CGO_ENABLED=0 go build -o bin/nested ./test/nested

## test: gofmt, vet, unit tests, then integration tests (/dev/kvm or nested host)
test:
	./scripts/test.sh

## integration: only the integration stage of `make test`
integration:
	SKIP_UNIT=1 ./scripts/test.sh

## demo: run `godwit demo` (/dev/kvm or nested host)
demo:
	./scripts/demo.sh

## fuzz: every Fuzz* target for FUZZTIME (default 10s) each
fuzz:
	./scripts/fuzz.sh

## fuzz-long: every Fuzz* target for 10 minutes each (FUZZTIME overrides)
fuzz-long:
	FUZZTIME=$${FUZZTIME:-10m} ./scripts/fuzz.sh

## nested-qemu-check: Debian's QEMU with -enable-kvm inside the nested host
nested-qemu-check:
	./scripts/nested-qemu-check.sh

clean:
	rm -rf bin
