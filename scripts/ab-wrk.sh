#!/usr/bin/env bash
# A/B of berth builds on one component: each NAME=BINARY runs `berth serve` with
# only that app, beside `wasmtime serve` (target/tools-venv, from setup.sh) as "wt";
# ROUNDS rounds of wrk -t1 at c=1 and c=50 for SECS s, servers alternating, the
# order reversed every other round. Loopback only.
# usage: scripts/ab-wrk.sh ROUNDS SECS COMPONENT.wasm NAME=BERTH[%REUSE] [NAME=BERTH[%REUSE] ...]
#   %REUSE sets the app's instances.reuse (none, serial, concurrent; WASIp3 only).
set -euo pipefail
ROUNDS=$1; SECS=$2; HELLO=$(realpath "$3"); shift 3
WT=$(cd "$(dirname "$0")/.." && pwd)/target/tools-venv/bin/wasmtime
W=$(mktemp -d); PIDS=(); declare -A PORT
trap 'for p in "${PIDS[@]}"; do kill $p 2>/dev/null||true; done; sleep 1; rm -rf $W' EXIT
fp() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
NAMES=()
for nb in "$@"; do
  n=${nb%%=*}; b=${nb#*=}; reuse=; p=$(fp); a=$(fp)
  case $b in *%*) reuse=${b##*%}; b=${b%\%*};; esac
  printf 'domain = "localhost"\n[apps.hello]\nwasm = "%s"\n' "$HELLO" > $W/$n.toml
  [ -z "$reuse" ] || printf '[apps.hello.instances]\nreuse = "%s"\n' "$reuse" >> $W/$n.toml
  $b serve --config $W/$n.toml --listen 127.0.0.1:$p --admin-listen 127.0.0.1:$a --data-dir $W/$n-data 2>$W/$n.log &
  PIDS+=($!); PORT[$n]=$p; NAMES+=($n)
done
p=$(fp); $WT serve -S cli --addr 127.0.0.1:$p "$HELLO" >$W/wt.log 2>&1 & PIDS+=($!); PORT[wt]=$p; NAMES+=(wt)
for n in "${NAMES[@]}"; do
  ok=; for i in $(seq 600); do curl -sf -H "Host: hello.localhost" http://127.0.0.1:${PORT[$n]}/ >/dev/null && ok=1 && break; sleep 0.1; done; [ -n "$ok" ] || { echo "$n never answered 200: $(tail -2 $W/$n.log 2>/dev/null)" >&2; exit 1; }
  wrk -t1 -c50 -d2s -H "Host: hello.localhost" http://127.0.0.1:${PORT[$n]}/ >/dev/null
done
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq $ROUNDS); do
  for c in 1 50; do
    order="${NAMES[*]}"; [ $((r%2)) = 0 ] && order=$(echo $order | tr ' ' '\n' | tac | tr '\n' ' ')
    line="r$r c=$c"
    for n in $order; do
      out=$(wrk -t1 -c$c -d${SECS}s -H "Host: hello.localhost" http://127.0.0.1:${PORT[$n]}/); rps=$(echo "$out" | awk '/Requests\/sec/{print int($2)}'); bad=$(echo "$out" | awk '/Non-2xx/{print "!"$NF}')
      line="$line $n=$rps$bad"
    done
    echo "$line"
  done
done
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
