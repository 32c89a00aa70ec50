# berth's two entry points:
#   make run   - set up, build, and serve examples/berth.toml on 127.0.0.1:8080
#   make test  - set up, then run the whole test suite and the lints
# Everything they need is installed by scripts/setup.sh when missing.

CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: setup components build run test test-only lint bench bench-compare clean

setup:
	@bash scripts/setup.sh

components: setup
	cd components && $(CARGO) build --release

build: components
	$(CARGO) build --release -p berth-cli

# The cargo-component example is served when it has been built (by
# `make test`, or by hand); `make run` never installs cargo-component.
CC_HELLO := examples/cargo-component-hello/target/wasm32-wasip1/release/cargo_component_hello.wasm

run: build
	bash scripts/build-examples.sh
	@cp examples/berth.toml examples/.run.toml
	@if [ -f $(CC_HELLO) ]; then printf '\n[apps.cargo-component-hello]\nwasm = "cargo-component-hello/target/wasm32-wasip1/release/cargo_component_hello.wasm"\n' >> examples/.run.toml; fi
	./target/release/berth serve --config examples/.run.toml

test: setup
	bash scripts/build-examples.sh --with-cargo-component
	$(CARGO) build -p berth-shim
	$(CARGO) test --workspace --all-targets
	bash scripts/walkthrough.sh
	$(MAKE) lint

test-only: setup
	$(CARGO) build -p berth-shim
	$(CARGO) test --workspace --all-targets

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	cd components && $(CARGO) fmt --all --check
	cd components && $(CARGO) clippy --release --all-targets -- -D warnings
	cd examples && $(CARGO) fmt --all --check
	cd examples && $(CARGO) clippy --release --all-targets -- -D warnings
	cd examples/cargo-component-hello && $(CARGO) fmt --check
	cd examples/spin-hello && $(CARGO) fmt --check
	cd examples/spin-hello && $(CARGO) clippy --release --target wasm32-wasip2 -- -D warnings
	cd examples/container-hello && $(CARGO) fmt --check
	cd examples/container-hello && $(CARGO) clippy --release --target x86_64-unknown-linux-musl -- -D warnings

bench: components
	$(CARGO) bench -p berth --bench cold_start

# Wasm vs container cold starts, bare runc, wasmtime serve, density (as root).
bench-compare: components
	bash scripts/bench.sh

clean:
	$(CARGO) clean
	cd components && $(CARGO) clean
