#!/usr/bin/env bash
# Benchmark 3, timeout accuracy (docs/benchmarks.md). Loopback only, bounded in time.
#   Gateways run with a short GATEWAY_HEARTBEAT_TIMEOUT_S (TIMEOUT_S); N devices log in and
#   heartbeat every HEARTBEAT_S, except SILENT (a share, spread evenly) that stop sending anything
#   right after LoginOk but keep their sockets open and reading. Held for TIMEOUT_S + HOLD_EXTRA_S
#   after the last login. The loadgen (--expect-timeout-s) reports:
#   - lateness of each silent device's close: (when the gateway closed the socket) -
#     (the device's last frame sent + TIMEOUT_S), p50/p99/max in ms; closes before that are "early";
#   - false offlines: heartbeating devices whose socket the gateway closed during the hold.
#   And the registry's `disconnect`/`timeout` events (presence_events) must equal the silent count.
#   Side by side, same run: a private Mosquitto (127.0.0.1:1884) with PEER_N clients, keep-alive
#   K = TIMEOUT_S * 2/3 (Mosquitto closes a silent client after 1.5 K), PINGREQ every HEARTBEAT_S.
#   Medians of RUNS runs.
# Env: N (20000), PEER_N (min(N, 15000)), SILENT (0.1), TIMEOUT_S (20), HEARTBEAT_S (5),
#   HOLD_EXTRA_S (10), RUNS (3), GATEWAYS (4).
source "$(dirname "$0")/lib/bench.sh"
N=${N:-20000}; PEER_N=${PEER_N:-$((N < 15000 ? N : 15000))}; SILENT=${SILENT:-0.1}
TIMEOUT_S=${TIMEOUT_S:-20}; HEARTBEAT_S=${HEARTBEAT_S:-5}; HOLD_EXTRA_S=${HOLD_EXTRA_S:-10}
RUNS=${RUNS:-3}; GATEWAYS=${GATEWAYS:-4}
MQTT_PORT=1884; KEEPALIVE_S=$((TIMEOUT_S * 2 / 3))
MQTT_TIMEOUT=$(python3 -c "print($KEEPALIVE_S * 1.5)")
LG="$BIN/presence-loadgen"
HOLD_S=$((TIMEOUT_S + HOLD_EXTRA_S)); BOUND_S=$((HOLD_S + 300))

ulimit -n "$(ulimit -Hn)"
bench_ports_free 7100 7200 9200 "$MQTT_PORT" $(seq 9101 $((9100 + GATEWAYS)))
bench_build
bench_database
bench_registry
bench_gateways "$GATEWAYS" GATEWAY_HEARTBEAT_TIMEOUT_S="$TIMEOUT_S" GATEWAY_HEARTBEAT_INTERVAL_S="$HEARTBEAT_S"
bench_mosquitto "$MQTT_PORT"

for run in $(seq 1 "$RUNS"); do
  echo "== run $run/$RUNS: presence, $N devices, $SILENT silent, timeout ${TIMEOUT_S}s" >&2
  timeout $((BOUND_S + 30)) "$LG" --mode presence --app bench --secret bench-secret --devices "$N" \
    --heartbeat-s "$HEARTBEAT_S" --silent-share "$SILENT" --hold-s "$HOLD_S" --expect-timeout-s "$TIMEOUT_S" \
    --timeout-s "$BOUND_S" --user-prefix "t${run}u" >"$OUT/timeout-presence-$run.json"
  sleep 2 # the last timeouts' events commit
  psql "$DATABASE_URL" -qtAc "SELECT count(*) FROM presence_events WHERE app_id = 'bench'
    AND user_id LIKE 't${run}u%' AND action = 'disconnect' AND reason = 'timeout'" >"$OUT/timeout-events-$run.txt"

  echo "== run $run/$RUNS: Mosquitto, $PEER_N clients, keep-alive ${KEEPALIVE_S}s (closes after ${MQTT_TIMEOUT}s)" >&2
  timeout $((BOUND_S + 30)) "$LG" --mode mqtt --target "127.0.0.1:$MQTT_PORT" --devices "$PEER_N" \
    --mqtt-keepalive-s "$KEEPALIVE_S" --heartbeat-s "$HEARTBEAT_S" --silent-share "$SILENT" --hold-s "$HOLD_S" \
    --expect-timeout-s "$MQTT_TIMEOUT" --timeout-s "$BOUND_S" --user-prefix "m${run}u" >"$OUT/timeout-mqtt-$run.json"
done

med() { for run in $(seq 1 "$RUNS"); do jqv "$OUT/timeout-$1-$run.json" "$2"; done | median; }
events=$(for run in $(seq 1 "$RUNS"); do cat "$OUT/timeout-events-$run.txt"; done | median)
silent=$(med presence 'd["timeouts"]["silent"]')
ratio() { python3 -c "print(f'{$1 / $2:.2f}' if $2 else '-')"; }
row() { # label key devices
  local t='d["timeouts"]'
  echo "| $1 | $3 | $(med "$2" "$t[\"silent\"]") | $(med "$2" "$t[\"closed\"]") | $(med "$2" "$t[\"late\"][\"p50_ms\"]") | $(med "$2" "$t[\"late\"][\"p99_ms\"]") | $(med "$2" "$t[\"late\"][\"max_ms\"]") | $(med "$2" "$t[\"early\"]") | $(med "$2" "$t[\"not_closed\"]") | $(med "$2" "$t[\"false_offlines\"]") | $(med "$2" 'sum(d["errors"].values())') |"
}
p99=$(med presence 'd["timeouts"]["late"]["p99_ms"]'); mp99=$(med mqtt 'd["timeouts"]["late"]["p99_ms"]')
cat <<TABLE

Timeout accuracy: medians of $RUNS runs, $GATEWAYS gateways, heartbeat every ${HEARTBEAT_S}s, $SILENT silent, everything on this machine ($(nproc) cores)
| peer (timeout) | devices | silent | closed after timeout | late p50 ms | late p99 ms | late max ms | closed early | silent not closed | false offlines | errors |
|---|---|---|---|---|---|---|---|---|---|---|
$(row "presence (${TIMEOUT_S}s)" presence "$N")
$(row "Mosquitto 2 (1.5 x ${KEEPALIVE_S}s keep-alive = ${MQTT_TIMEOUT}s)" mqtt "$PEER_N")

presence p99 lateness vs Mosquitto: $(ratio "$p99" "$mp99")x.  Registry disconnect/timeout events (median): $events for $silent silent devices ($( [[ $events == "$silent" ]] && echo equal || echo MISMATCH)).
Targets: p99 <= 1000 ms late, zero false offlines.
TABLE
