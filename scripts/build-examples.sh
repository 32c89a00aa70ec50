#!/usr/bin/env bash
# Builds berth's examples and prints the path of each component built:
#   - the examples/ workspace (plain cargo + berth-sdk, target wasm32-wasip2);
#   - examples/cargo-component-hello with `cargo component build`:
#       --with-cargo-component (what `make test` passes) installs
#       cargo-component when `cargo component --version` fails (a from-source
#       `cargo install`: about 11 minutes the first time) and builds it;
#       without the flag (`make run`) it is built only when cargo-component
#       is already installed, and skipped otherwise;
#   - examples/spin-hello, a Rust `spin-sdk` 7 app (WASIp3), with plain
#     `cargo build --target wasm32-wasip2 --release`, as Spin's template does;
#   - examples/python-hello with componentize-py (from target/tools-venv,
#     which scripts/setup.sh fills), against wit/p3.
# Idempotent: a second run only checks that everything is up to date.
set -euo pipefail

CARGO_COMPONENT_VERSION=0.21.1

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cargo="${CARGO:-cargo}"
log() { printf 'build-examples: %s\n' "$*" >&2; }

# Outputs go where this script says, whatever the caller's environment.
unset CARGO_TARGET_DIR CARGO_BUILD_TARGET

if command -v rustup >/dev/null; then
  # wasm32-wasip2 for the workspace; cargo-component compiles for
  # wasm32-wasip1 and adapts the module into a component.
  for target in wasm32-wasip2 wasm32-wasip1; do
    if ! rustup target list --installed | grep -qx "$target"; then
      log "adding Rust target $target"
      rustup target add "$target"
    fi
  done
fi

with_cc=0
[ "${1:-}" = --with-cargo-component ] && with_cc=1
if "$cargo" component --version >/dev/null 2>&1; then
  with_cc=1
fi

if [ "$with_cc" = 1 ] && ! "$cargo" component --version >/dev/null 2>&1; then
  log "installing cargo-component $CARGO_COMPONENT_VERSION (cargo install --locked)"
  "$cargo" install --locked "cargo-component@$CARGO_COMPONENT_VERSION"
fi
if [ "$with_cc" = 1 ]; then
  installed="$("$cargo" component --version)"
  case "$installed" in
    *" $CARGO_COMPONENT_VERSION"*) ;;
    *) log "warning: found $installed; the examples are checked with $CARGO_COMPONENT_VERSION" ;;
  esac
fi

# A component starts like a core module but with layer 1, version 0x0d:
# bytes 4..8 are 0d 00 01 00 (a core module has 01 00 00 00).
check_component() {
  local magic
  magic="$(od -An -tx1 -j4 -N4 "$1" | tr -d ' \n')"
  if [ "$magic" != 0d000100 ]; then
    log "error: $1 is not a component (bytes 4..8: $magic)"
    exit 1
  fi
  printf '%s\n' "$1"
}

log "examples/ workspace (cargo build --release)"
(cd "$root/examples" && "$cargo" build --release)
check_component "$root/examples/target/wasm32-wasip2/release/sdk-hello.wasm"
check_component "$root/examples/target/wasm32-wasip2/release/counter.wasm"

if [ "$with_cc" = 1 ]; then
  log "examples/cargo-component-hello (cargo component build --release)"
  (cd "$root/examples/cargo-component-hello" && "$cargo" component build --release)
  check_component "$root/examples/cargo-component-hello/target/wasm32-wasip1/release/cargo_component_hello.wasm"
else
  log "skipping examples/cargo-component-hello: cargo-component is not installed (make test installs it)"
fi

log "examples/spin-hello (cargo build --target wasm32-wasip2 --release)"
(cd "$root/examples/spin-hello" && "$cargo" build --release --target wasm32-wasip2)
check_component "$root/examples/spin-hello/target/wasm32-wasip2/release/spin_hello.wasm"

componentize_py="$root/target/tools-venv/bin/componentize-py"
if [ ! -x "$componentize_py" ]; then
  log "componentize-py missing: running scripts/setup.sh"
  bash "$root/scripts/setup.sh"
fi
py_out="$root/examples/python-hello/target/python-hello.wasm"
if [ ! -f "$py_out" ] || [ -n "$(find "$root/examples/python-hello/app.py" "$root/wit/p3" -newer "$py_out" -print -quit)" ]; then
  log "examples/python-hello (componentize-py -w wasi:http/service@0.3.0)"
  mkdir -p "$root/examples/python-hello/target"
  (cd "$root/examples/python-hello" &&
    "$componentize_py" --quiet -d ../../wit/p3 -w wasi:http/service@0.3.0 \
      componentize app -o target/python-hello.wasm.tmp &&
    mv target/python-hello.wasm.tmp target/python-hello.wasm)
fi
check_component "$py_out"
