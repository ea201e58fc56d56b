# The two commands a new user needs: `make run` and `make test`. See README.md.
SWIFT_FLAGS := -Xswiftc -warnings-as-errors

.PHONY: run test bench deps build build-debug unit integration format clean

## Installs missing system packages, builds in release mode, runs the whole stack on http://localhost:$(HV_PORT or 8000).
run: deps build
	scripts/stack.sh run

## Installs missing system packages, builds, runs the unit tests, then the end-to-end tests on a private stack.
test: deps build-debug unit integration

## wrk through nginx on a private stack, plus the scheduler micro-benchmarks; prints one table.
bench: deps build
	bench/run.py

deps:
	@scripts/deps.sh

build:
	swift build -c release $(SWIFT_FLAGS)

build-debug:
	swift build --build-tests $(SWIFT_FLAGS)

unit:
	swift test --skip-build --skip IntegrationTests

# The end-to-end suites each start their own stack (PostgreSQL, Redis, nginx, the pool); one at a time on 2 cores.
integration:
	swift test --skip-build --filter IntegrationTests --no-parallel

format:
	scripts/validate.sh

clean:
	rm -rf .build
