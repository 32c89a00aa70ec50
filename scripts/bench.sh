#!/usr/bin/env bash
# berth's performance figures against their anchors, all from one run, on
# loopback only. Prints a summary (figure, anchor, goal, pass/miss) and
# leaves every raw result in $BENCH_OUT (default target/bench):
#
#   cold-start.{txt,json,svg}  berth bench cold-start --baseline-runc:
#                              Wasm vs container cold starts, berth's
#                              container vs bare runc (same rootfs and spec),
#                              the container proxy overhead
#   wrk-*.txt                  throughput and latency, berth serve vs
#                              wasmtime serve on the same hello component
#   density.txt                berth serve RSS with 1, 100, 1000 idle apps
#   summary.{txt,json}         the table below
#
# Needs root (containers), and what scripts/setup.sh installs (runc,
# docker-registry, busybox-static, wrk). wasmtime-cli 48 is installed with
# `cargo install --locked` when missing (about 15 minutes on 2 cores).
# Safe to run again: everything it starts is stopped on exit, its scratch
# files are temporary, and its outputs are overwritten.
#
# Knobs: BENCH_OUT, BENCH_ITERATIONS (20), BENCH_WARM (200), BENCH_WRK_SECS
# (10), BENCH_DENSITY ("1 100 1000"), BENCH_WASM (the hello component),
# CARGO_TARGET_DIR.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
CARGO=${CARGO:-cargo}
OUT=${BENCH_OUT:-$ROOT/target/bench}
ITERATIONS=${BENCH_ITERATIONS:-20}
WARM=${BENCH_WARM:-200}
WRK_SECS=${BENCH_WRK_SECS:-10}
DENSITY=${BENCH_DENSITY:-"1 100 1000"}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BERTH=$TARGET_DIR/release/berth
HELLO=${BENCH_WASM:-$ROOT/components/target/wasm32-wasip2/release/hello.wasm}
WASMTIME_VERSION=48.0.8

log() { printf '==> %s\n' "$*" >&2; }
die() {
    printf 'bench.sh: %s\n' "$*" >&2
    exit 1
}

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

[ "$(id -u)" = 0 ] || die "run as root: containers need overlay mounts and runc"
for tool in runc docker-registry wrk curl python3; do
    command -v "$tool" >/dev/null || die "$tool is missing: run scripts/setup.sh"
done
ulimit -n 65536 2>/dev/null || true
mkdir -p "$OUT"

log "building berth (release)"
"$CARGO" build --release --quiet -p berth
if [ ! -f "$HELLO" ]; then
    log "building the hello component"
    (cd components && "$CARGO" build --release --quiet)
fi
[ -f "$HELLO" ] || die "no hello component at $HELLO (make components)"

WASMTIME=$(command -v wasmtime || true)
if [ -z "$WASMTIME" ] || ! "$WASMTIME" --version | grep -q "^wasmtime 48\."; then
    log "wasmtime-cli $WASMTIME_VERSION is missing: installing it (cargo install --locked, about 15 minutes on 2 cores)"
    timeout 60m "$CARGO" install --locked --quiet "wasmtime-cli@$WASMTIME_VERSION"
    WASMTIME=${CARGO_HOME:-$HOME/.cargo}/bin/wasmtime
fi
"$WASMTIME" --version | grep -q "^wasmtime 48\." || die "$WASMTIME is not wasmtime 48"

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

# --- (a) cold starts, bare runc, proxy overhead: one process, one run -------
log "berth bench cold-start: $ITERATIONS cold starts per kind, bare-runc baseline, $WARM warm requests"
timeout 20m "$BERTH" bench cold-start --iterations "$ITERATIONS" --warm "$WARM" --baseline-runc \
    --wasm "$HELLO" --json "$OUT/cold-start.json" --svg "$OUT/cold-start.svg" |
    tee "$OUT/cold-start.txt"

# --- (b) throughput: berth serve vs wasmtime serve, same component, wrk ------
log "throughput: berth serve vs wasmtime serve -S cli on the same component (wrk on loopback)"
BERTH_PORT=$(free_port)
ADMIN_PORT=$(free_port)
cat >"$WORK/serve.toml" <<EOF
domain = "localhost"
[apps.hello]
wasm = "$HELLO"
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

# run_wrk NAME PORT CONNECTIONS SECONDS: writes wrk-NAME-cCONNECTIONS.txt
run_wrk() {
    local file="$OUT/wrk-$1-c$3.txt"
    wrk -t1 -c"$3" -d"$4s" --latency -H "Host: hello.localhost" "http://127.0.0.1:$2/" >"$file"
    if grep -q "Non-2xx\|Socket errors" "$file"; then
        cat "$file" >&2
        die "$1 answered errors under load ($file)"
    fi
}
rps() { awk '/^Requests\/sec:/ {print $2}' "$OUT/wrk-$1.txt"; }
# wrk's latency percentiles are like 85.00us, 1.20ms, 2.00s: in µs.
p50_us() {
    awk '$1 == "50%" {
        v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v)
        print v * (u == "us" ? 1 : u == "ms" ? 1000 : u == "s" ? 1000000 : 1)
    }' "$OUT/wrk-$1.txt"
}

for name in berth wasmtime; do # warm both up, untimed
    port=$([ $name = berth ] && echo "$BERTH_PORT" || echo "$WT_PORT")
    wrk -t1 -c50 -d2s -H "Host: hello.localhost" "http://127.0.0.1:$port/" >/dev/null
done
# Two rounds, alternating, so a drift of the machine hits both alike.
for round in 1 2; do
    run_wrk "berth-r$round" "$BERTH_PORT" 50 "$WRK_SECS"
    run_wrk "wasmtime-r$round" "$WT_PORT" 50 "$WRK_SECS"
done
run_wrk berth "$BERTH_PORT" 1 5
run_wrk wasmtime "$WT_PORT" 1 5
stop "$BERTH_PID"
stop "$WT_PID"

BERTH_RPS=$(python3 -c "print(($(rps berth-r1-c50) + $(rps berth-r2-c50)) / 2)")
WT_RPS=$(python3 -c "print(($(rps wasmtime-r1-c50) + $(rps wasmtime-r2-c50)) / 2)")
BERTH_C1_P50=$(p50_us berth-c1)
WT_C1_P50=$(p50_us wasmtime-c1)

# --- (d) density: RSS of berth serve with N idle apps -------------------------
log "density: berth serve RSS with $DENSITY idle apps (at zero, and with one warm instance each)"
: >"$OUT/density.txt"
DENSITY_DATA="$WORK/density-data" # shared: the component is compiled once
# density_config MODE N: a config with N hello apps, at zero or with one
# instance each (the compiled component resident).
density_config() {
    echo 'domain = "localhost"'
    for i in $(seq "$2"); do
        echo "[apps.a$i]"
        echo "wasm = \"$HELLO\""
        if [ "$1" = zero ]; then echo "autoscale = { initial_scale = 0 }"; fi
    done
}
# Compile once, unmeasured: compiling grows the heap, which a process that
# loads from the cache never does.
density_config warm 1 >"$WORK/prime.toml"
port=$(free_port)
admin=$(free_port)
"$BERTH" serve --config "$WORK/prime.toml" --listen "127.0.0.1:$port" \
    --admin-listen "127.0.0.1:$admin" --data-dir "$DENSITY_DATA" 2>"$OUT/density-prime.log" &
pid=$!
PIDS+=("$pid")
wait_body "http://127.0.0.1:$admin/readyz" localhost ready 300 ||
    die "berth serve did not get ready; see $OUT/density-prime.log"
stop "$pid"
for mode in zero warm; do
    for n in $DENSITY; do
        config="$WORK/density-$mode-$n.toml"
        density_config "$mode" "$n" >"$config"
        port=$(free_port)
        admin=$(free_port)
        "$BERTH" serve --config "$config" --listen "127.0.0.1:$port" \
            --admin-listen "127.0.0.1:$admin" --data-dir "$DENSITY_DATA" \
            2>"$OUT/density-$mode-$n.log" &
        pid=$!
        PIDS+=("$pid")
        wait_body "http://127.0.0.1:$admin/readyz" localhost ready 600 ||
            die "berth serve with $n apps did not get ready; see $OUT/density-$mode-$n.log"
        sleep 2
        rss_kib=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")
        echo "$mode $n $rss_kib" >>"$OUT/density.txt"
        log "  $mode, $n apps: RSS $((rss_kib / 1024)) MiB"
        # Only after the RSS is read: the app answers (a first request on
        # an app at zero starts it).
        wait_body "http://127.0.0.1:$port/" "a$n.localhost" "hello from a$n" 30 ||
            die "app a$n of $n did not answer"
        stop "$pid"
    done
done

# --- summary -------------------------------------------------------------------
BERTH_RPS=$BERTH_RPS WT_RPS=$WT_RPS BERTH_C1_P50=$BERTH_C1_P50 WT_C1_P50=$WT_C1_P50 \
    OUT=$OUT python3 - <<'EOF' | tee "$OUT/summary.txt"
import json, os

out = os.environ["OUT"]
cold = json.load(open(f"{out}/cold-start.json"))
density = {}
for line in open(f"{out}/density.txt"):
    mode, n, kib = line.split()
    density[(mode, int(n))] = int(kib) / 1024

def fmt_us(v):
    if v < 10: return f"{v:.2f} µs"
    if v < 1000: return f"{v:.0f} µs"
    if v < 10000: return f"{v / 1e3:.2f} ms"
    return f"{v / 1e3:.1f} ms"

rows = []
def row(figure, value, anchor, goal, ok):
    rows.append({"figure": figure, "measured": value, "anchor": anchor, "goal": goal,
                 "result": "—" if ok is None else ("pass" if ok else "MISS")})

w, c = cold["wasm"], cold["container"]
host = w["per_request_us"]["host"]["p50"]
row("Wasm host-side cold start, per request (Server-Timing berth-host), p50",
    fmt_us(host), "absolute", "≤ 20 µs", host <= 20)
wc = w["cold_start_us"]["p50"]
row("Wasm scale-from-zero → first byte, p50", fmt_us(wc), "absolute", "≤ 1 ms", wc <= 1000)
cc = c["cold_start_us"]["p50"]
row("Wasm:container cold-start ratio (p50)", f"{cold['ratio_cold_p50']:.0f}×",
    f"berth container {fmt_us(cc)}", "≥ 1000×", cold["ratio_cold_p50"] >= 1000)
r = cold["ratio_container_to_runc_p50"]
row("container cold start vs bare runc (p50)", f"{r:.2f}×",
    f"bare runc {fmt_us(cold['baseline_runc']['cold_start_us']['p50'])}", "≤ 1.15×", r <= 1.15)
p = c["proxy_us"]
row("container proxy overhead (p50, through berth − direct)", fmt_us(p["overhead_p50"]),
    f"direct to the instance {fmt_us(p['direct']['p50'])}", "≤ 100 µs", p["overhead_p50"] <= 100)
br, wr = float(os.environ["BERTH_RPS"]), float(os.environ["WT_RPS"])
row("throughput, wrk -t1 -c50 (mean of 2 runs)", f"{br:,.0f} rps = {br / wr:.2f}×",
    f"wasmtime serve {wr:,.0f} rps", "≥ 1.5×", br / wr >= 1.5)
bl, wl = float(os.environ["BERTH_C1_P50"]), float(os.environ["WT_C1_P50"])
row("latency p50, wrk -t1 -c1", f"{fmt_us(bl)} = {bl / wl:.2f}×",
    f"wasmtime serve {fmt_us(wl)}", "—", None)
ns = sorted(n for (m, n) in density if m == "zero")
lo, hi = ns[0], ns[-1]
for mode, what in [("zero", "at zero"), ("warm", "one warm instance each")]:
    if (mode, lo) in density and (mode, hi) in density and hi > lo:
        per = (density[(mode, hi)] - density[(mode, lo)]) / (hi - lo)
        row(f"RSS per idle Wasm app, {what} ({lo} → {hi} apps)", f"{per:.2f} MiB",
            f"berth serve with {lo} app: {density[(mode, lo)]:.0f} MiB; with {hi}: "
            f"{density[(mode, hi)]:.0f} MiB", "≤ 2 MiB", per <= 2)

h = cold["host"]
print(f"\nberth performance summary ({h['cpus']} CPUs, {h['cpu_model']}, Linux {h['kernel']}, "
      f"{cold['iterations']} cold starts per kind)\n")
widths = [max(len(r[k]) for r in rows + [dict(figure="figure", measured="measured",
          anchor="anchor", goal="goal", result="result")]) for k in
          ["figure", "measured", "anchor", "goal", "result"]]
keys = ["figure", "measured", "anchor", "goal", "result"]
print("  ".join(k.ljust(wd) for k, wd in zip(keys, widths)))
for r in rows:
    print("  ".join(r[k].ljust(wd) for k, wd in zip(keys, widths)))
json.dump({"rows": rows, "density_mib": {f"{m}-{n}": v for (m, n), v in density.items()}},
          open(f"{out}/summary.json", "w"), indent=2, ensure_ascii=False)
EOF
log "results in $OUT"
