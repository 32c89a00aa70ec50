#!/usr/bin/env bash
# A/B of outbound connection pooling: one `berth serve` with two apps of the
# same outbound component (GETs ?url= on every request), `pooled` (the
# default) and `unpooled` (limits.outbound_pool_idle_per_host = 0), both
# calling an upstream `berth serve` of the hello component on loopback.
# ROUNDS rounds of wrk -t1 at c=1 and c=10 for SECS s each, the two apps
# alternating, the order reversed every other round. Loopback only; every
# process it starts is stopped on exit.
# usage: scripts/outbound-pool-ab.sh BERTH OUTBOUND.wasm HELLO.wasm [ROUNDS] [SECS]
set -euo pipefail
BERTH=$1; OUTBOUND=$2; HELLO=$3; ROUNDS=${4:-2}; SECS=${5:-5}
W=$(mktemp -d); PIDS=()
trap 'for p in "${PIDS[@]}"; do kill $p 2>/dev/null||true; done; sleep 1; rm -rf $W' EXIT
fp() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_up() { for i in $(seq 600); do curl -sf -H "Host: $2.localhost" "http://127.0.0.1:$1$3" >/dev/null && return; sleep 0.1; done; echo "$2 did not answer" >&2; exit 1; }

UP=$(fp); UPA=$(fp)
printf 'domain = "localhost"\n[apps.hello]\nwasm = "%s"\nroutes = ["/"]\n' "$HELLO" > $W/up.toml
$BERTH serve --config $W/up.toml --listen 127.0.0.1:$UP --admin-listen 127.0.0.1:$UPA --data-dir $W/up-data 2>$W/up.log &
PIDS+=($!)
P=$(fp); A=$(fp)
cat > $W/front.toml <<EOF
domain = "localhost"
[apps.pooled]
wasm = "$OUTBOUND"
allowed_outbound_hosts = ["127.0.0.1:$UP"]
[apps.unpooled]
wasm = "$OUTBOUND"
allowed_outbound_hosts = ["127.0.0.1:$UP"]
[apps.unpooled.limits]
outbound_pool_idle_per_host = 0
EOF
$BERTH serve --config $W/front.toml --listen 127.0.0.1:$P --admin-listen 127.0.0.1:$A --data-dir $W/front-data 2>$W/front.log &
PIDS+=($!)
# The guest's request carries Host: 127.0.0.1:$UP; the upstream's hello
# takes every path (routes = ["/"]).
Q="/?url=http%3A%2F%2F127.0.0.1%3A$UP%2F"
wait_up $UP hello /
for app in pooled unpooled; do
  wait_up $P $app "$Q"
  wrk -t1 -c10 -d2s -H "Host: $app.localhost" "http://127.0.0.1:$P$Q" >/dev/null
done
curl -s -H "Host: pooled.localhost" "http://127.0.0.1:$P$Q"; echo
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq $ROUNDS); do
  for c in 1 10; do
    order="pooled unpooled"; [ $((r%2)) = 0 ] && order="unpooled pooled"
    line="r$r c=$c"
    for app in $order; do
      out=$(wrk -t1 -c$c -d${SECS}s -H "Host: $app.localhost" "http://127.0.0.1:$P$Q")
      rps=$(echo "$out" | awk '/Requests\/sec/{print int($2)}')
      non2xx=$(echo "$out" | awk '/Non-2xx/{print $NF}')
      line="$line $app=$rps${non2xx:+ (non-2xx $non2xx)}"
    done
    echo "$line"
  done
done
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
curl -s -H "Authorization: Bearer $(cat $W/front-data/admin-token 2>/dev/null || true)" \
  "http://127.0.0.1:$A/metrics" | grep '^berth_outbound_' || true
