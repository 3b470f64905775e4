#!/usr/bin/env bash
# Benchmark 1, login storm (docs/benchmarks.md). Loopback only, bounded in time.
#   N devices log in as fast as the system takes them (connect, token check, policy, durable event,
#   LoginOk), then a kick storm: a second device per user, measured from its login to the old
#   socket's close. Then a paced run at half the saturation rate for latency. Side by side, same
#   shape, same run: the raw TCP ceiling (one frame each way) and Mosquitto (CONNECT/CONNACK,
#   client-id takeover as the kick). Medians of RUNS runs.
#   The same storm (N devices, + kick storm) over WebSocket (the gateways' 127.0.0.1:7101,
#   `ws://.../v1/connect`, one frame per binary message), right after the TCP storm's callbacks
#   are delivered, and its callbacks delivered before the next run: logins/s vs the raw ceiling
#   and vs TCP (the median of the per-run ratios).
#   "other work %": CPU used on the machine by anything but this benchmark during each storm, in
#   percent of all cores (median of runs): another build or test suite on the same cores.
# Env: N (50000), PEER_N (15000: Mosquitto holds < 20k sockets in one process), RUNS (3), GATEWAYS (4),
#   QUIET_WAIT_S (0: off; else wait up to that long before each storm until the machine is less
#   than QUIET_PCT, 20, percent busy).
source "$(dirname "$0")/lib/bench.sh"
N=${N:-50000}; PEER_N=${PEER_N:-15000}; RUNS=${RUNS:-3}; GATEWAYS=${GATEWAYS:-4}
LG="$BIN/presence-loadgen"

bench_system "$GATEWAYS"
# As many raw-ceiling processes as gateways (SO_REUSEPORT): one process holds < 20k sockets.
for i in $(seq 1 "$GATEWAYS"); do bench_start "raw-ceiling$i" "$BIN/raw-ceiling" 127.0.0.1:7190; done
pgrep -x mosquitto >/dev/null || mosquitto -d -c /etc/mosquitto/mosquitto.conf
sleep 0.5

presence() { "$LG" --mode presence --app bench --secret bench-secret --timeout-s 120 "$@"; }

# storm NAME CMD...: waits for a quiet machine (QUIET_WAIT_S), runs CMD into login-NAME-<run>.json,
# and notes the CPU seconds of the gateways and of the load generator, and the other work's share
# of the machine during it.
storm() {
  local name=$1 m0 m1 c0; shift
  bench_wait_quiet
  STORM_T0=$(date +%s%N); c0=$(bench_cpu_s gateway); bench_cpu_mark m0
  "$@" >"$OUT/login-$name-$run.json"
  bench_cpu_mark m1
  echo "$(bench_cpu_s gateway) - $c0" | bc >"$OUT/login-$name-cpu-$run.txt"
  bench_other_pct "$m0" "$m1" >"$OUT/login-$name-other-$run.txt"
  bench_children_s "$m0" "$m1" >"$OUT/login-$name-lgcpu-$run.txt"
}

for run in $(seq 1 "$RUNS"); do
  echo "== run $run/$RUNS" >&2
  storm raw "$LG" --mode raw --target 127.0.0.1:7190 --devices "$N"
  storm presence presence --devices "$N" --kick --user-prefix "r${run}u"
  if [[ -x "$BIN/notifier" ]]; then bench_callbacks_done "$STORM_T0" >"$OUT/login-callbacks-$run.txt"; else echo n/a >"$OUT/login-callbacks-$run.txt"; fi
  storm ws presence --transport ws --target 127.0.0.1:7101 --devices "$N" --kick --user-prefix "w${run}u"
  if [[ -x "$BIN/notifier" ]]; then bench_callbacks_done "$STORM_T0" >"$OUT/login-ws-callbacks-$run.txt"; else echo n/a >"$OUT/login-ws-callbacks-$run.txt"; fi
  rate=$(jqv "$OUT/login-presence-$run.json" 'd["rate_per_s"]')
  storm paced presence --devices "$N" --rate "$(echo "$rate / 2" | bc)" --user-prefix "p${run}u"
  storm raw-small "$LG" --mode raw --target 127.0.0.1:7190 --devices "$PEER_N"
  storm mqtt "$LG" --mode mqtt --target 127.0.0.1:1883 --devices "$PEER_N" --kick --user-prefix "m${run}u"
  storm presence-small presence --devices "$PEER_N" --kick --user-prefix "s${run}u"
done

med() { for run in $(seq 1 "$RUNS"); do jqv "$OUT/login-$1-$run.json" "$2"; done | median | xargs printf '%.1f'; }
raw=$(med raw 'd["rate_per_s"]'); pres=$(med presence 'd["rate_per_s"]'); ws=$(med ws 'd["rate_per_s"]')
ws_tcp=$(for run in $(seq 1 "$RUNS"); do
  python3 -c "import json,sys; w, t = (json.load(open(f))['rate_per_s'] for f in sys.argv[1:]); print(w / t if t else 0)" \
    "$OUT/login-ws-$run.json" "$OUT/login-presence-$run.json"; done | median | xargs printf '%.2f')
raw_s=$(med raw-small 'd["rate_per_s"]'); mq=$(med mqtt 'd["rate_per_s"]'); pres_s=$(med presence-small 'd["rate_per_s"]')
cb=$(for run in $(seq 1 "$RUNS"); do cat "$OUT/login-callbacks-$run.txt"; done | median)
ratio() { printf '%.2f' "$(echo "scale=4; $1 / $2" | bc)"; }
other() { for run in $(seq 1 "$RUNS"); do cat "$OUT/login-$1-other-$run.txt"; done | median | xargs printf '%.0f'; }
cpu_per_login() { # NAME [cpu|lgcpu]
  for run in $(seq 1 "$RUNS"); do echo "$(cat "$OUT/login-$1-${2:-cpu}-$run.txt") * 1000000 / (2 * $N)" | bc -l; done | median | xargs printf '%.0f'
}
cat <<TABLE

Login storm: medians of $RUNS runs, $GATEWAYS gateways, everything on this machine ($(nproc) cores)
| run | devices | connects+logins/s | ratio | p50 ms | p99 ms | kick p50 ms | kick p99 ms | errors | other work % |
|---|---|---|---|---|---|---|---|---|---|
| raw TCP ceiling | $N | $raw | 1.00 | $(med raw 'd["connect"]["p50_ms"]') | $(med raw 'd["connect"]["p99_ms"]') | - | - | $(med raw 'sum(d["errors"].values())') | $(other raw) |
| presence (saturation, + kick storm) | $N | $pres | $(ratio "$pres" "$raw") | $(med presence 'd["connect"]["p50_ms"]') | $(med presence 'd["connect"]["p99_ms"]') | $(med presence 'd["kick"]["p50_ms"]') | $(med presence 'd["kick"]["p99_ms"]') | $(med presence 'sum(d["errors"].values())') | $(other presence) |
| presence over WebSocket (saturation, + kick storm) | $N | $ws | $(ratio "$ws" "$raw") | $(med ws 'd["connect"]["p50_ms"]') | $(med ws 'd["connect"]["p99_ms"]') | $(med ws 'd["kick"]["p50_ms"]') | $(med ws 'd["kick"]["p99_ms"]') | $(med ws 'sum(d["errors"].values())') | $(other ws) |
| presence (paced at half) | $N | $(med paced 'd["rate_per_s"]') | - | $(med paced 'd["connect"]["p50_ms"]') | $(med paced 'd["connect"]["p99_ms"]') | - | - | $(med paced 'sum(d["errors"].values())') | $(other paced) |
| raw TCP ceiling | $PEER_N | $raw_s | 1.00 | $(med raw-small 'd["connect"]["p50_ms"]') | $(med raw-small 'd["connect"]["p99_ms"]') | - | - | $(med raw-small 'sum(d["errors"].values())') | $(other raw-small) |
| Mosquitto (+ takeover) | $PEER_N | $mq | $(ratio "$mq" "$raw_s") | $(med mqtt 'd["connect"]["p50_ms"]') | $(med mqtt 'd["connect"]["p99_ms"]') | $(med mqtt 'd["kick"]["p50_ms"]') | $(med mqtt 'd["kick"]["p99_ms"]') | $(med mqtt 'sum(d["errors"].values())') | $(other mqtt) |
| presence (+ kick storm) | $PEER_N | $pres_s | $(ratio "$pres_s" "$raw_s") | $(med presence-small 'd["connect"]["p50_ms"]') | $(med presence-small 'd["connect"]["p99_ms"]') | $(med presence-small 'd["kick"]["p50_ms"]') | $(med presence-small 'd["kick"]["p99_ms"]') | $(med presence-small 'sum(d["errors"].values())') | $(other presence-small) |

presence vs Mosquitto connect rate at $PEER_N: $(ratio "$pres_s" "$mq")x.  All callbacks delivered after (s, median): $cb
WebSocket vs TCP logins/s at $N (median of per-run ratios): ${ws_tcp}x.
CPU per login (both waves, 2 x $N logins, median): gateways TCP $(cpu_per_login presence) us, WebSocket $(cpu_per_login ws) us; load generator TCP $(cpu_per_login presence lgcpu) us, WebSocket $(cpu_per_login ws lgcpu) us.
TABLE
