#!/usr/bin/env bash
# Density: resident memory and start time (launch → /readyz) of `berth serve`
# with many apps, on loopback only. Run on its own in minutes
# (`scripts/density.sh`, or `BENCH_ONLY=density scripts/bench.sh`), or as
# section (d) of scripts/bench.sh. Needs no root. Appends to $OUT/density.txt
# one line per case, `MODE N RSS_KIB START_S`:
#
#   zero N         N apps of the hello component at zero (initial_scale 0)
#   called N       N apps of hello, started (initial_scale 1), then each
#                  called once (RSS after the calls; start before them)
#   restore N      the N apps of `called N` made through the admin API
#                  instead (origin api in state.json, written here in the
#                  state file's format), brought back by a restart
#   stock4/stock0  100 apps called once with the stock of pre-instantiated
#                  instances on and off (third column: instances stocked)
#   distinct-cold  D apps of D distinct components, compile cache empty:
#                  the first start compiles each one
#   distinct D     the same apps again, compile cache warm, each called once
#
# and prints them with the machine's load (uptime) at start and end.
#
# Knobs: BENCH_OUT (target/bench), BENCH_DENSITY ("1 100 1000 10000"),
# BENCH_DISTINCT (1000; 0 skips), BENCH_STOCK (1: the stock pair),
# BENCH_WASM (the hello component), BERTH (the binary; default: built
# release), BENCH_START_TIMEOUT (600 s per start), CARGO_TARGET_DIR.
# Everything it starts is stopped on exit; scratch files are temporary.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
CARGO=${CARGO:-cargo}
OUT=${BENCH_OUT:-$ROOT/target/bench}
DENSITY=${BENCH_DENSITY:-"1 100 1000 10000"}
DISTINCT=${BENCH_DISTINCT:-1000}
STOCK=${BENCH_STOCK:-1}
START_TIMEOUT=${BENCH_START_TIMEOUT:-600}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
HELLO=${BENCH_WASM:-$ROOT/components/target/wasm32-wasip2/release/hello.wasm}

log() { printf '==> %s\n' "$*" >&2; }
die() {
    printf 'density.sh: %s\n' "$*" >&2
    exit 1
}

if [ -z "${BERTH:-}" ]; then
    log "building berth (release)"
    "$CARGO" build --release --quiet -p berth-cli
    BERTH=$TARGET_DIR/release/berth
fi
[ -x "$BERTH" ] || die "no berth binary at $BERTH"
if [ ! -f "$HELLO" ]; then
    log "building the hello component"
    (cd components && "$CARGO" build --release --quiet)
fi
[ -f "$HELLO" ] || die "no hello component at $HELLO (make components)"
for tool in curl python3; do
    command -v "$tool" >/dev/null || die "$tool is missing"
done
# One log file per app stays open: 10,000 apps need more than the usual
# 1,024 (berth raises its soft limit to the hard one; root may raise both).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

WORK=$(mktemp -d -t berth-density.XXXXXX)
DPID=
cleanup() {
    if [ -n "$DPID" ]; then
        kill -TERM "$DPID" 2>/dev/null || true
        # Bounded: SIGKILL after 30 s.
        for _ in $(seq 300); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$DPID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$OUT"
: >"$OUT/density.txt"
LOAD_START=$(uptime)
log "density: $DENSITY apps of one component, $DISTINCT of distinct ones; load: $LOAD_START"

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# stop: SIGTERM the server, SIGKILL after 60 s; reaped.
stop() {
    [ -n "$DPID" ] || return 0
    kill -TERM "$DPID" 2>/dev/null || true
    for _ in $(seq 600); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$DPID" 2>/dev/null || true
    wait "$DPID" 2>/dev/null || true
    DPID=
}

# config MODE N [WASM_DIR]: N hello apps, at zero (MODE zero) or with the
# default initial instance (MODE called); with WASM_DIR, app i runs
# WASM_DIR/i.wasm (distinct components).
config() {
    MODE=$1 N=$2 WASM_DIR=${3:-} HELLO=$HELLO python3 - <<'PY'
import os
n, mode, d, hello = int(os.environ["N"]), os.environ["MODE"], os.environ["WASM_DIR"], os.environ["HELLO"]
out = ['domain = "localhost"']
for i in range(1, n + 1):
    out.append(f"[apps.a{i}]")
    out.append(f'wasm = "{d}/{i}.wasm"' if d else f'wasm = "{hello}"')
    if mode == "zero":
        out.append("autoscale = { initial_scale = 0 }")
print("\n".join(out))
PY
}

# serve NAME CONFIG DATA: starts berth serve, records the time from launch to
# /readyz in DSTART; leaves its pid in DPID and ports in DPORT/DADMIN.
serve() {
    DPORT=$(free_port)
    DADMIN=$(free_port)
    local t0 t1 deadline
    t0=$(date +%s.%N)
    "$BERTH" serve --config "$2" --listen "127.0.0.1:$DPORT" \
        --admin-listen "127.0.0.1:$DADMIN" --data-dir "$3" 2>"$OUT/density-$1.log" &
    DPID=$!
    deadline=$((SECONDS + START_TIMEOUT))
    until curl -sf --max-time 2 "http://127.0.0.1:$DADMIN/readyz" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || die "berth serve ($1) not ready after ${START_TIMEOUT}s; see $OUT/density-$1.log"
        kill -0 "$DPID" 2>/dev/null || die "berth serve ($1) exited; see $OUT/density-$1.log"
        sleep 0.02
    done
    t1=$(date +%s.%N)
    DSTART=$(python3 -c "print(f'{$t1 - $t0:.2f}')")
    # What berth says the batch took (see ARCHITECTURE.md, "At start").
    grep -o 'batch deployed.*' "$OUT/density-$1.log" | sed "s/^/    $1: /" >&2 || true
}
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
# call_all N: GET / of a1..aN once each, over one keep-alive connection
# (bounded: 10 s per request); fails on any answer but 200.
call_all() {
    N=$1 PORT=$DPORT python3 - <<'PY'
import http.client, os, sys
n, port = int(os.environ["N"]), int(os.environ["PORT"])
c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
for i in range(1, n + 1):
    c.request("GET", "/", headers={"Host": f"a{i}.localhost"})
    r = c.getresponse()
    body = r.read()
    if r.status != 200:
        sys.exit(f"app a{i} answered {r.status}: {body[:200]!r}")
PY
}
record() { # MODE N THIRD_COLUMN
    echo "$1 $2 $(rss_kib "$DPID") $3" >>"$OUT/density.txt"
    log "  $1 $2: RSS $(($(rss_kib "$DPID") / 1024)) MiB, start ${DSTART}s"
}
# state_of_api_apps N WASM: a state file of N apps a1..aN made through the
# admin API (what `berth deploy` leaves), in the state file's format.
state_of_api_apps() {
    N=$1 WASM=$2 python3 - <<'PY'
import hashlib, json, os
n, wasm = int(os.environ["N"]), os.environ["WASM"]
sha = hashlib.sha256(open(wasm, "rb").read()).hexdigest()
apps = {f"a{i}": {"config": {"wasm": wasm}, "origin": "api", "revision": f"a{i}-{i:05}",
                  "sha256": sha, "kind": "wasm", "deployed_at": "2026-12-03T00:00:00Z"}
        for i in range(1, n + 1)}
print(json.dumps({"version": 1, "last_revision": n, "apps": apps}))
PY
}

DATA="$WORK/data" # shared: the hello component is compiled once
echo 'domain = "localhost"' >"$WORK/none.toml"
for n in $DENSITY; do
    config zero "$n" >"$WORK/zero-$n.toml"
    serve "zero-$n" "$WORK/zero-$n.toml" "$DATA"
    sleep 1
    record zero "$n" "$DSTART"
    stop
    config called "$n" >"$WORK/called-$n.toml"
    serve "called-$n" "$WORK/called-$n.toml" "$DATA"
    start=$DSTART
    call_all "$n"
    sleep 1
    DSTART=$start record called "$n" "$start"
    stop
    # The same apps made through the API, restored from the state file.
    mkdir -p "$WORK/restore-$n"
    cp -r "$DATA/compiled" "$WORK/restore-$n/"
    state_of_api_apps "$n" "$HELLO" >"$WORK/restore-$n/state.json"
    serve "restore-$n" "$WORK/none.toml" "$WORK/restore-$n"
    start=$DSTART
    call_all "$n"
    sleep 1
    DSTART=$start record restore "$n" "$start"
    stop
    rm -rf "$WORK/restore-$n"
done
if [ "$STOCK" = 1 ]; then
    # What the stock costs: 100 apps called once, with the stock and without.
    stocked_now() { # instances in every stock, from /metrics
        curl -sf -H "Authorization: Bearer $(cat "$DATA/admin-token")" \
            "http://127.0.0.1:$DADMIN/metrics" |
            awk '/^berth_wasm_stocked_instances/ {n += $2} END {print n + 0}'
    }
    config called 100 >"$WORK/stock.toml"
    for per in 4 0; do
        BERTH_WASM_STOCK_PER_INSTANCE=$per serve "stock-$per" "$WORK/stock.toml" "$DATA"
        call_all 100
        sleep 2
        echo "stock$per 100 $(rss_kib "$DPID") $(stocked_now)" >>"$OUT/density.txt"
        stop
    done
fi
if [ "$DISTINCT" -gt 0 ]; then
    # Distinct components: hello with a custom section naming its number, so
    # every file has its own sha256 (and its own compiled code).
    DISTINCT_DIR="$WORK/distinct"
    mkdir -p "$DISTINCT_DIR"
    HELLO="$HELLO" DIR="$DISTINCT_DIR" N="$DISTINCT" python3 - <<'PY'
import os
base = open(os.environ["HELLO"], "rb").read()
def leb(n):
    out = bytearray()
    while True:
        b = n & 0x7F; n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n: return bytes(out)
for i in range(1, int(os.environ["N"]) + 1):
    name, payload = b"berth-bench", str(i).encode()
    body = leb(len(name)) + name + payload
    open(f"{os.environ['DIR']}/{i}.wasm", "wb").write(base + b"\x00" + leb(len(body)) + body)
PY
    config called "$DISTINCT" "$DISTINCT_DIR" >"$WORK/distinct.toml"
    # First start: an empty compile cache, every component compiled.
    serve distinct-cold "$WORK/distinct.toml" "$WORK/distinct-data"
    record distinct-cold "$DISTINCT" "$DSTART"
    stop
    # Second start: the cache is warm; each app called once.
    serve distinct "$WORK/distinct.toml" "$WORK/distinct-data"
    start=$DSTART
    call_all "$DISTINCT"
    sleep 1
    DSTART=$start record distinct "$DISTINCT" "$start"
    stop
fi
LOAD_END=$(uptime)

OUT=$OUT LOAD_START=$LOAD_START LOAD_END=$LOAD_END python3 - <<'PY' | tee "$OUT/density-summary.txt"
import os
out = os.environ["OUT"]
print(f"\nberth density (launch → /readyz; RSS of berth serve)")
print(f"load at start:{os.environ['LOAD_START'].split('load')[-1]}; at end:{os.environ['LOAD_END'].split('load')[-1]}\n")
print(f"{'case':<28}{'apps':>7}{'RSS MiB':>10}{'start s':>10}")
for line in open(f"{out}/density.txt"):
    mode, n, kib, third = line.split()
    if mode.startswith("stock"):
        print(f"{mode + ' (stocked: ' + third + ')':<28}{n:>7}{int(kib) / 1024:>10.0f}{'':>10}")
    else:
        print(f"{mode:<28}{n:>7}{int(kib) / 1024:>10.0f}{float(third):>10.2f}")
PY
