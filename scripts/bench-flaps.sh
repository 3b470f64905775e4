#!/usr/bin/env bash
# Benchmark 9, flap damping (docs/benchmarks.md). Loopback only, bounded in time.
#   Two apps in one run, on the same services and load: `flap0` reports lost links at once
#   (apps.disconnect_grace_ms = 0), `flap5` holds them for GRACE_MS. Each app gets N devices
#   (flap-bench); every CYCLE_S, SHARE of each app's devices drop their connection and come back as
#   the same device within RECONNECT_MAX_MS. Callbacks counted per app over the flapping window:
#   the app's events made in it (each is one callback; the notifier sends every event once), and,
#   as a cross-check, the unique events its callback sink received by the end.
# Env: N (10000 per app), CYCLES (3), CYCLE_S (30), SHARE (0.2), RECONNECT_MAX_MS (2000),
#   GRACE_MS (5000), GATEWAYS (2), RUNS (1).
source "$(dirname "$0")/lib/bench.sh"
N=${N:-10000}; CYCLES=${CYCLES:-3}; CYCLE_S=${CYCLE_S:-30}; SHARE=${SHARE:-0.2}
RECONNECT_MAX_MS=${RECONNECT_MAX_MS:-2000}; GRACE_MS=${GRACE_MS:-5000}; GATEWAYS=${GATEWAYS:-2}; RUNS=${RUNS:-1}
bench_ports_free 7100 7101 7200 9000 9001 9200 9300 $(seq 9101 $((9100 + GATEWAYS)))
bench_build
ulimit -n "$(ulimit -Hn)"

wait_file() { # PATH SECONDS
  local deadline=$((SECONDS + $2))
  until [[ -f $1 ]]; do ((SECONDS < deadline)) || { echo "timed out waiting for $1" >&2; return 1; }; sleep 0.2; done
}

results="$OUT/flaps.results"; : >"$results"
for run in $(seq 1 "$RUNS"); do
  echo "== run $run of $RUNS" >&2
  bench_database
  bench_registry
  bench_app flap0 flap-secret http://127.0.0.1:9000/cb cb
  bench_app flap5 flap-secret http://127.0.0.1:9001/cb cb
  psql "$DATABASE_URL" -qc "UPDATE apps SET disconnect_grace_ms = $GRACE_MS WHERE app_id = 'flap5'" >/dev/null
  bench_start sink0 "$BIN/callback-sink" --addr 127.0.0.1:9000; bench_wait_http http://127.0.0.1:9000/stats sink0
  bench_start sink5 "$BIN/callback-sink" --addr 127.0.0.1:9001; bench_wait_http http://127.0.0.1:9001/stats sink5
  bench_start notifier env RUST_LOG=warn NOTIFIER_METRICS_ADDR=127.0.0.1:9300 "$BIN/notifier"
  bench_wait_http http://127.0.0.1:9300/healthz notifier
  bench_gateways "$GATEWAYS"
  sleep 2
  pids=()
  for app in flap0 flap5; do
    rm -f "$OUT/$app.ready" "$OUT/$app.done" "$OUT/$app.stop"
    timeout $((CYCLES * CYCLE_S + 200)) "$BIN/flap-bench" --app "$app" --secret flap-secret --devices "$N" \
      --user-prefix "$app-" --share "$SHARE" --cycle-s "$CYCLE_S" --cycles "$CYCLES" \
      --reconnect-max-ms "$RECONNECT_MAX_MS" --settle-s 10 --tail-s $((GRACE_MS / 1000 + 3)) \
      --files "$OUT/$app" --timeout-s $((CYCLES * CYCLE_S + 180)) >"$OUT/$app.json" 2>"$OUT/$app.log" &
    pids+=($!)
  done
  wait_file "$OUT/flap0.ready" 120; wait_file "$OUT/flap5.ready" 120
  sleep 5 # the logins' last events are committed; the cycles start 10 s after ready
  base0=$(bench_events flap0); base5=$(bench_events flap5)
  wait_file "$OUT/flap0.done" $((CYCLES * CYCLE_S + 60)); wait_file "$OUT/flap5.done" $((CYCLES * CYCLE_S + 60))
  end0=$(bench_events flap0); end5=$(bench_events flap5)
  # Every event so far (the logins, then the window's) delivered, before the devices leave: the
  # sinks' unique counts.
  for _ in $(seq 1 60); do
    [[ $(bench_sink_unique 9000) -ge $end0 && $(bench_sink_unique 9001) -ge $end5 ]] && break; sleep 1
  done
  got0=$(bench_sink_unique 9000); got5=$(bench_sink_unique 9001)
  touch "$OUT/flap0.stop" "$OUT/flap5.stop"
  wait "${pids[@]}" || true
  flaps0=$(jqv "$OUT/flap0.json" "d['flaps']"); flaps5=$(jqv "$OUT/flap5.json" "d['flaps']")
  fail=$(( $(jqv "$OUT/flap0.json" "d['failed_reconnects']") + $(jqv "$OUT/flap5.json" "d['failed_reconnects']") ))
  echo "$flaps0 $((end0 - base0)) $flaps5 $((end5 - base5)) $got0 $end0 $got5 $end5 $fail" | tee -a "$results" >&2
  bench_stop notifier; bench_stop sink; bench_stop gateway; bench_stop registry
done

echo
echo "Flap damping: $RUNS run(s), N=$N devices per app, $CYCLES cycles of ${CYCLE_S} s, ${SHARE} of the devices flapping per cycle, back within ${RECONNECT_MAX_MS} ms; grace ${GRACE_MS} ms vs 0; $GATEWAYS gateways, everything on this machine ($(nproc) cores)"
echo
echo "| run | flaps, grace 0 | callbacks, grace 0 | per flap | flaps, grace ${GRACE_MS} ms | callbacks, grace ${GRACE_MS} ms | per flap | damped / undamped | delivered (sink / events), grace 0 | delivered, grace ${GRACE_MS} ms | failed reconnects |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
n=0
while read -r f0 c0 f5 c5 g0 e0 g5 e5 fail; do
  n=$((n + 1))
  python3 - "$n" "$f0" "$c0" "$f5" "$c5" "$g0" "$e0" "$g5" "$e5" "$fail" <<'PY'
import sys
n, f0, c0, f5, c5, g0, e0, g5, e5, fail = sys.argv[1:]
f0, c0, f5, c5 = map(int, (f0, c0, f5, c5))
ratio = (c5 / f5) / (c0 / f0) if f0 and f5 and c0 else float("nan")
print(f"| {n} | {f0} | {c0} | {c0 / max(f0, 1):.2f} | {f5} | {c5} | {c5 / max(f5, 1):.3f} | {100 * ratio:.2f} % | {g0} / {e0} | {g5} / {e5} | {fail} |")
PY
done <"$results"
