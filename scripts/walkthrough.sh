#!/usr/bin/env bash
# The README walkthrough, end to end, as CI runs it (`make test` calls this):
# build a component -> push it with oras-py and with `berth push` to a local
# registry -> deploy both by reference -> curl -> serve the SDK and
# cargo-component examples, and WASIp3 apps made by spin-sdk (pushed with
# `berth push`) and componentize-py -> count visits with the key-value
# counter example across a restart of berth.
# Everything runs on loopback on free ports and is stopped on exit.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
BERTH="${BERTH:-$root/target/debug/berth}"
work="$(mktemp -d)"
pids=()
passed=0
failed=0

log() { printf 'walkthrough: %s\n' "$*" >&2; }
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { # URL
  for _ in $(seq 1 300); do
    if curl -fsS -o /dev/null "$1" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  log "error: $1 did not come up"; return 1
}
expect() { # NAME EXPECTED ACTUAL
  if [ "$2" = "$3" ]; then
    passed=$((passed + 1)); log "ok: $1"
  else
    failed=$((failed + 1)); log "FAILED: $1: expected '$2', got '$3'"
  fi
}

log "1. build the components and the examples"
(cd components && cargo build --release --quiet)
bash scripts/build-examples.sh >/dev/null
[ -x "$BERTH" ] || cargo build --quiet -p berth-cli
hello="$root/components/target/wasm32-wasip2/release/hello.wasm"

log "2. start a local registry (CNCF distribution)"
reg_port="$(free_port)"
cat > "$work/registry.yml" <<YAML
version: 0.1
storage: { filesystem: { rootdirectory: $work/registry }, delete: { enabled: true } }
http: { addr: 127.0.0.1:$reg_port }
log: { level: warn }
YAML
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$reg_port/v2/"
registry="127.0.0.1:$reg_port"

log "3. push hello.wasm with oras-py (CNCF Wasm media types) and with berth push"
echo '{"architecture":"wasm","os":"wasip2"}' > "$work/config.json"
(cd "$(dirname "$hello")" && python3 - "$registry" "$work/config.json" <<'PY'
import sys, oras.client
registry, config = sys.argv[1], sys.argv[2]
c = oras.client.OrasClient(insecure=True)
c.push(target=f"{registry}/hello-oras:v1", files=["hello.wasm:application/wasm"],
       manifest_config=f"{config}:application/vnd.wasm.config.v0+json", disable_path_validation=True)
PY
) >/dev/null
"$BERTH" push "$registry/hello:v1" "$hello" >"$work/push.out"
grep -q '^digest: sha256:' "$work/push.out" && expect "berth push prints a digest" yes yes \
  || expect "berth push prints a digest" yes no

spin="$root/examples/spin-hello/target/wasm32-wasip2/release/spin_hello.wasm"
"$BERTH" push "$registry/spin-hello:v1" "$spin" >/dev/null

log "4. build the container example and push it with umoci + skopeo"
bash examples/container-hello/build-and-push.sh "$registry/container-hello:v1" >/dev/null

log "5. deploy everything by reference, plus the Wasm examples, and serve"
port="$(free_port)"; admin="$(free_port)"
cat > "$work/berth.toml" <<TOML
[apps.hello]
image = "$registry/hello:v1"

[apps.hello-oras]
image = "$registry/hello-oras:v1"

[apps.sdk-hello]
wasm = "$root/examples/target/wasm32-wasip2/release/sdk-hello.wasm"

[apps.cc-hello]
wasm = "$root/examples/cargo-component-hello/target/wasm32-wasip1/release/cargo_component_hello.wasm"

[apps.container-hello]
image = "$registry/container-hello:v1"

[apps.spin-hello]
image = "$registry/spin-hello:v1"

[apps.python-hello]
wasm = "$root/examples/python-hello/target/python-hello.wasm"

[apps.counter]
wasm = "$root/examples/target/wasm32-wasip2/release/counter.wasm"
keyvalue = ["default"]
TOML
serve() {
  "$BERTH" serve --config "$work/berth.toml" --listen "127.0.0.1:$port" \
    --admin-listen "127.0.0.1:$admin" --data-dir "$work/data" 2>>"$work/berth.log" &
  berth_pid=$!
  pids+=("$berth_pid")
  wait_http "http://127.0.0.1:$admin/readyz"
}
serve

log "6. curl"
expect "hello (berth push)" "hello from hello" "$(curl -fsS "http://hello.localhost:$port/")"
expect "hello-oras (oras-py push)" "hello from hello-oras" "$(curl -fsS "http://hello-oras.localhost:$port/")"
expect "sdk-hello" "hello, Ferris!" "$(curl -fsS "http://sdk-hello.localhost:$port/?name=Ferris")"
expect "cargo-component hello" "hello from cc-hello (cargo-component): GET /x" \
  "$(curl -fsS "http://cc-hello.localhost:$port/x")"
expect "container example" "hello from container-hello (a container)" \
  "$(curl -fsS "http://container-hello.localhost:$port/")"
expect "spin-sdk app (WASIp3, berth push)" "hello from spin-sdk: GET /a?b=1" \
  "$(curl -fsS "http://spin-hello.localhost:$port/a?b=1")"
expect "componentize-py app (WASIp3)" "hello from componentize-py: GET /" \
  "$(curl -fsS "http://python-hello.localhost:$port/")"
expect "componentize-py app streams a body back" "round trip" \
  "$(curl -fsS --data-binary 'round trip' "http://python-hello.localhost:$port/echo")"
expect "berth app shows the world" "wasi:http@0.3" \
  "$(BERTH_ADMIN="http://127.0.0.1:$admin" "$BERTH" app spin-hello --data-dir "$work/data" | awk '$1 == "world:" {print $2}')"
expect "unknown app is 404" 404 "$(curl -s -o /dev/null -w '%{http_code}' "http://nope.localhost:$port/")"
grep -q "pinned=$registry/hello@sha256:" "$work/berth.log" && expect "the tag is pinned to a digest" yes yes \
  || expect "the tag is pinned to a digest" yes no

log "7. count visits in key-value storage, restart berth, count on"
expect "counter, first visit" 1 "$(curl -fsS "http://counter.localhost:$port/")"
expect "counter, second visit" 2 "$(curl -fsS "http://counter.localhost:$port/")"
kill "$berth_pid"
wait "$berth_pid" 2>/dev/null || true
serve
expect "counter after a restart" 3 "$(curl -fsS "http://counter.localhost:$port/")"
expect "the counter's bucket in berth app" "default" \
  "$(BERTH_ADMIN="http://127.0.0.1:$admin" "$BERTH" app counter --data-dir "$work/data" | awk '$1 == "bucket:" {print $2}')"

log "8. compare cold starts (a short run; see README for the full one)"
if "$BERTH" bench cold-start --iterations 3 --warm 5 --json "$work/bench.json" --svg "$work/bench.svg" \
    >"$work/bench.out" 2>&1 && grep -q '"ratio_cold_p50"' "$work/bench.json"; then
  expect "berth bench cold-start writes its table, JSON and SVG" yes yes
  cat "$work/bench.out" >&2
else
  cat "$work/bench.out" >&2
  expect "berth bench cold-start writes its table, JSON and SVG" yes no
fi

log "$passed passed, $failed failed"
echo "walkthrough: $passed passed, $failed failed"
[ "$failed" = 0 ]
