#!/usr/bin/env bash
# Benchmark 2, idle capacity (docs/benchmarks.md). Loopback only, bounded in time.
#   N logged-in devices held by GATEWAYS gateway processes sharing 127.0.0.1:7100 (SO_REUSEPORT);
#   the loadgen shards itself over processes (one process holds < 20k sockets: `ulimit -Hn`).
#   Measured while they are held:
#   - user-space RSS per device: (gateways' RSS with the devices - their RSS before any device
#     connected) / devices connected; the same for the registry;
#   - CPU at rest of gateways + registry, in percent of one core over WINDOW_S, with the default
#     120 s heartbeat and with an accelerated FAST_HEARTBEAT_S heartbeat (N / FAST_HEARTBEAT_S
#     heartbeats per second: 10k/s at 100k), each on fresh connections.
#   Side by side, same run: a private Mosquitto (127.0.0.1:1884, no persistence, errors-only log)
#   holding PEER_N MQTT connections (keep-alive = the heartbeat, PINGREQ at that interval), its RSS
#   per connection and its CPU the same way. One Mosquitto process is bound by the same fd limit,
#   so PEER_N < N and the comparison is per connection. Medians of RUNS runs; every run starts
#   from a fresh database, registry and gateways.
# Env: N (100000), PEER_N (15000), RUNS (3), GATEWAYS (4, raised to hold N within the fd limit
#   with 25% headroom for uneven SO_REUSEPORT spreading), HEARTBEAT_S (120), FAST_HEARTBEAT_S (10),
#   SETTLE_S (10: after the last connect, before measuring), WINDOW_S (60: CPU window),
#   CONNECT_MAX_S (300: bound on connecting N), GATEWAY_WORKER_THREADS (unset: one per core),
#   CPU (1; 0: memory only, no CPU window and no fast-heartbeat phases), CSV (unset; a file to
#   append one row of the medians to: devices, held, gateways, bytes per device and per Mosquitto
#   connection; scripts/bench-idle-sweep.sh).
source "$(dirname "$0")/lib/bench.sh"
N=${N:-100000}; PEER_N=${PEER_N:-15000}; RUNS=${RUNS:-3}
HEARTBEAT_S=${HEARTBEAT_S:-120}; FAST_HEARTBEAT_S=${FAST_HEARTBEAT_S:-10}
SETTLE_S=${SETTLE_S:-10}; WINDOW_S=${WINDOW_S:-60}; CONNECT_MAX_S=${CONNECT_MAX_S:-300}; CPU=${CPU:-1}
((CPU)) || WINDOW_S=0
MQTT_PORT=1884
LG="$BIN/presence-loadgen"

ulimit -n "$(ulimit -Hn)"
per_gateway=$(($(ulimit -Hn) - 256)) # GATEWAY_MAX_CONNECTIONS default
needed=$(((N * 5 / 4 + per_gateway - 1) / per_gateway))
GATEWAYS=${GATEWAYS:-$((needed > 4 ? needed : 4))}
if ((GATEWAYS * per_gateway < N)); then
  echo "GATEWAYS=$GATEWAYS x $per_gateway connections cannot hold N=$N" >&2; exit 1
fi
bench_ports_free 7100 7200 9200 "$MQTT_PORT" $(seq 9101 $((9100 + GATEWAYS)))
bench_build

cpu_sum() { local s=0 name; for name in "$@"; do s=$(echo "$s + $(bench_cpu_s "$name")" | bc); done; echo "$s"; }

# hold LABEL PORT COUNT HEARTBEAT_S LOADGEN-ARGS...: holds COUNT connections from the loadgen;
# once all are up and SETTLE_S passed, records RSS ("<label>.rss", KiB per process group) and
# CPU over WINDOW_S ("<label>.cpu", seconds), then releases them and waits for the sockets to go.
hold() {
  local label=$1 port=$2 count=$3 hb=$4; shift 4
  local stop="$OUT/$label.stop" max=$((CONNECT_MAX_S + SETTLE_S + WINDOW_S + 30)) got cpu0 cpu1 lg
  rm -f "$stop"
  timeout $((max + 60)) "$LG" --target "127.0.0.1:$port" --devices "$count" --heartbeat-s "$hb" \
    --hold-s "$max" --stop-file "$stop" --timeout-s $((max + 30)) "$@" >"$OUT/$label.json" 2>"$OUT/$label.log" &
  lg=$!
  got=$(bench_wait_established "$port" "$count" "$CONNECT_MAX_S")
  ((got >= count)) || echo "   $label: only $got of $count connected" >&2
  sleep "$SETTLE_S"
  got=$(bench_established "$port")
  echo "$got" >"$OUT/$label.held"
  if [[ $port == "$MQTT_PORT" ]]; then
    bench_rss_kib mosquitto >"$OUT/$label.rss"; cpu0=$(cpu_sum mosquitto)
    sleep "$WINDOW_S"; cpu1=$(cpu_sum mosquitto)
  else
    echo "$(bench_rss_kib gateway) $(bench_rss_kib registry)" >"$OUT/$label.rss"; cpu0=$(cpu_sum gateway registry)
    sleep "$WINDOW_S"; cpu1=$(cpu_sum gateway registry)
  fi
  echo "$cpu1 - $cpu0" | bc >"$OUT/$label.cpu"
  touch "$stop"
  wait "$lg" || echo "   $label: loadgen exited with $? (see $OUT/$label.log)" >&2
  bench_wait_closed "$port" 60
  echo "   $label: held $got, $(cat "$OUT/$label.rss") KiB, $(cat "$OUT/$label.cpu") CPU s in ${WINDOW_S}s" >&2
}

for run in $(seq 1 "$RUNS"); do
  echo "== run $run/$RUNS: presence, $N devices on $GATEWAYS gateways" >&2
  bench_database
  bench_registry
  bench_gateways "$GATEWAYS" GATEWAY_HEARTBEAT_INTERVAL_S="$HEARTBEAT_S" \
    ${GATEWAY_WORKER_THREADS:+GATEWAY_WORKER_THREADS="$GATEWAY_WORKER_THREADS"}
  sleep 2
  echo "$(bench_rss_kib gateway) $(bench_rss_kib registry)" >"$OUT/idle-base-$run.rss"
  presence_args=(--mode presence --app bench --secret bench-secret)
  hold "idle-presence-$run" 7100 "$N" "$HEARTBEAT_S" "${presence_args[@]}" --user-prefix "i${run}u"
  if ((CPU)); then
    hold "idle-presence-fast-$run" 7100 "$N" "$FAST_HEARTBEAT_S" "${presence_args[@]}" --user-prefix "f${run}u"
  fi
  bench_stop gateway
  bench_stop registry

  echo "== run $run/$RUNS: Mosquitto, $PEER_N connections" >&2
  bench_mosquitto "$MQTT_PORT"
  sleep 1
  bench_rss_kib mosquitto >"$OUT/idle-base-mqtt-$run.rss"
  hold "idle-mqtt-$run" "$MQTT_PORT" "$PEER_N" "$HEARTBEAT_S" --mode mqtt --mqtt-keepalive-s "$HEARTBEAT_S" --user-prefix "m${run}u"
  if ((CPU)); then
    hold "idle-mqtt-fast-$run" "$MQTT_PORT" "$PEER_N" "$FAST_HEARTBEAT_S" --mode mqtt --mqtt-keepalive-s "$FAST_HEARTBEAT_S" --user-prefix "n${run}u"
  fi
  bench_stop mosquitto
done

# Per run figures, then medians.
cpu_of() { if ((CPU)); then cat "$OUT/$1.cpu"; else echo 0; fi; } # CPU seconds of a hold (0 without CPU windows)
per_run() { # EXPR over: gw0 reg0 gw1 reg1 held m0 m1 mheld cpu cpufast mcpu mcpufast
  for run in $(seq 1 "$RUNS"); do
    read -r gw0 reg0 <"$OUT/idle-base-$run.rss"; read -r gw1 reg1 <"$OUT/idle-presence-$run.rss"
    read -r m0 <"$OUT/idle-base-mqtt-$run.rss"; read -r m1 <"$OUT/idle-mqtt-$run.rss"
    held=$(cat "$OUT/idle-presence-$run.held"); mheld=$(cat "$OUT/idle-mqtt-$run.held")
    cpu=$(cpu_of "idle-presence-$run"); cpufast=$(cpu_of "idle-presence-fast-$run")
    mcpu=$(cpu_of "idle-mqtt-$run"); mcpufast=$(cpu_of "idle-mqtt-fast-$run")
    python3 -c "gw0, reg0, gw1, reg1, held, m0, m1, mheld = $gw0, $reg0, $gw1, $reg1, $held, $m0, $m1, $mheld
cpu, cpufast, mcpu, mcpufast, window = $cpu, $cpufast, $mcpu, $mcpufast, $WINDOW_S
print(round(float($1), 2))"
  done | median
}
gw_b=$(per_run '(gw1 - gw0) * 1024 / max(held, 1)')
reg_b=$(per_run '(reg1 - reg0) * 1024 / max(held, 1)')
mq_b=$(per_run '(m1 - m0) * 1024 / max(mheld, 1)')
held=$(per_run held | xargs printf '%.0f'); mheld=$(per_run mheld | xargs printf '%.0f')
cpu=-; cpufast=-; mcpu=-; mcpufast=-; phases="presence mqtt"
if ((CPU)); then
  cpu=$(per_run '100 * cpu / window'); cpufast=$(per_run '100 * cpufast / window')
  mcpu=$(per_run '100 * mcpu / window'); mcpufast=$(per_run '100 * mcpufast / window')
  phases="presence presence-fast mqtt mqtt-fast"
fi
errors=$(for run in $(seq 1 "$RUNS"); do for f in $phases; do
  jqv "$OUT/idle-$f-$run.json" 'sum(d["errors"].values())' 2>/dev/null || echo 1; done; done | paste -sd+ | bc)
ratio() { python3 -c "print(f'{$1 / $2:.2f}' if $2 else '-')"; }
cat <<TABLE

Idle capacity: medians of $RUNS runs, $GATEWAYS gateways, CPU over ${WINDOW_S}s, everything on this machine ($(nproc) cores)
| what | connections held | RSS bytes per connection | vs Mosquitto | CPU % of a core @${HEARTBEAT_S}s heartbeat | CPU % @${FAST_HEARTBEAT_S}s heartbeat |
|---|---|---|---|---|---|
| presence gateways (sum) | $held | $(printf '%.0f' "$gw_b") | $(ratio "$gw_b" "$mq_b") | $cpu (gateways + registry) | $cpufast (gateways + registry, $((N / FAST_HEARTBEAT_S)) heartbeats/s) |
| presence registry | $held | $(printf '%.0f' "$reg_b") | - | (included above) | (included above) |
| presence gateways + registry | $held | $(python3 -c "print(round($gw_b + $reg_b))") | $(ratio "($gw_b + $reg_b)" "$mq_b") | $cpu | $cpufast |
| Mosquitto 2 (one process) | $mheld | $(printf '%.0f' "$mq_b") | 1.00 | $mcpu | $mcpufast ($((PEER_N / FAST_HEARTBEAT_S)) PINGREQ/s) |

RSS is user space only (socket buffers are kernel memory, the same for both). Loadgen errors over all runs: $errors.
Targets: gateway <= 4096 bytes/device and <= Mosquitto; < 5% of a core at the ${HEARTBEAT_S}s heartbeat.
TABLE
if [[ -n ${CSV:-} ]]; then
  [[ -s $CSV ]] || echo "devices,held,gateways,gateway_bytes_per_device,registry_bytes_per_device,mqtt_connections,mqtt_bytes_per_connection,runs,errors" >"$CSV"
  echo "$N,$held,$GATEWAYS,$(printf '%.0f' "$gw_b"),$(printf '%.0f' "$reg_b"),$mheld,$(printf '%.0f' "$mq_b"),$RUNS,$errors" >>"$CSV"
fi
