#!/usr/bin/env bash
# Installs what berth's run and test commands need, when it is missing.
# Idempotent; safe to run on every `make run` / `make test`.
#   - Rust targets wasm32-wasip2, wasm32-wasip1, x86_64-unknown-linux-musl
#   - Debian: runc, docker-registry (CNCF distribution), skopeo, umoci,
#     apache2-utils (htpasswd for registry auth tests), busybox-static, wrk,
#     containernetworking-plugins (the isolated container network),
#     iptables and iproute2 (its firewall chains, bridge and test namespaces),
#     chromium and chromium-driver (the console's browser tests)
#     containerd (ctr; the containerd shim's tests run a private daemon),
#     curl (requests from inside the shim tests' network namespaces)
#   - PyPI: oras (oras-py, an ORAS client used by interop tests)
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
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing Debian packages: ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! python3 -c 'import oras.client' 2>/dev/null; then
  log "installing oras-py from PyPI"
  python3 -m pip install --quiet --disable-pip-version-check oras
fi
