#!/usr/bin/env bash
# Builds the container-hello image and pushes it to a registry:
#   examples/container-hello/build-and-push.sh REGISTRY/REPO:TAG
# A static binary (x86_64-unknown-linux-musl) in an otherwise empty image,
# assembled with umoci and pushed with skopeo (plain HTTP for loopback
# registries). Installs the musl target when missing.
set -euo pipefail
ref="${1:?usage: build-and-push.sh REGISTRY/REPO:TAG}"
here="$(cd "$(dirname "$0")" && pwd)"
target=x86_64-unknown-linux-musl

rustup target list --installed | grep -qx "$target" || rustup target add "$target"
(cd "$here" && cargo build --quiet --release --target "$target")
bin="$here/target/$target/release/container-hello"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
umoci init --layout "$work/oci"
umoci new --image "$work/oci:latest"
umoci unpack --image "$work/oci:latest" "$work/bundle" >/dev/null
install -m 0755 "$bin" "$work/bundle/rootfs/server"
umoci repack --image "$work/oci:latest" "$work/bundle"
umoci config --image "$work/oci:latest" \
  --config.entrypoint /server --config.env PATH=/ --config.workingdir / \
  --architecture amd64 --os linux

case "$ref" in
  localhost:*|localhost/*|127.*) tls=--dest-tls-verify=false ;;
  *) tls=--dest-tls-verify=true ;;
esac
skopeo copy --quiet "$tls" "oci:$work/oci:latest" "docker://$ref"
echo "pushed $ref"
