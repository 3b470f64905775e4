#!/usr/bin/env bash
# Soak run (docs/benchmarks.md, section 10): steady churn for DURATION_S on loopback, sampling every
# service's RSS, CPU and open fds each minute, and the callback lag. Bounded in time; stops itself.
#   Services: 1 registry, GATEWAYS gateways, the notifier (callbacks to a sink), the REST facade.
#   Load, all at once for DURATION_S:
#   - flapping devices: FLAP_N devices (flap-bench) held; every 30 s, 20 % of them drop their link
#     and log in again within 2 s (grace 0: a disconnect and a login each);
#   - churn: one presence-loadgen after another, each CHURN_N devices logging in at CHURN_RATE/s,
#     then a second device per user that kicks the first (single_device), then all leave; users
#     come from a pool of CHURN_POOL x CHURN_N (an app's users are many but not endless: the
#     registry keeps every user it has seen);
#   - queries: QUERY_RATE REST batch queries/s of 500 flapping users.
#   Each minute: RSS (KiB), CPU seconds, open fds of every service; events in Postgres, callbacks
#   the sink received (unique), lag = events - received.
#   At the end: the load stops, the notifier drains; lost = events - received (must be 0); errors
#   = loadgen, query and reconnect errors (must be 0); RSS in the last minute of load vs at minute
#   WARMUP_MIN (must be <= 1.1x). Prints the samples and the verdict; raw CSV in target/bench/soak.csv.
# Env: DURATION_S (1800), FLAP_N (10000), CHURN_N (3000), CHURN_RATE (2500), CHURN_POOL (10),
#   QUERY_RATE (50), GATEWAYS (2), WARMUP_MIN (5).
source "$(dirname "$0")/lib/bench.sh"
DURATION_S=${DURATION_S:-1800}; FLAP_N=${FLAP_N:-10000}; CHURN_N=${CHURN_N:-3000}; CHURN_RATE=${CHURN_RATE:-2500}
QUERY_RATE=${QUERY_RATE:-50}; GATEWAYS=${GATEWAYS:-2}; WARMUP_MIN=${WARMUP_MIN:-5}; CHURN_POOL=${CHURN_POOL:-10}
((WARMUP_MIN >= 1 && WARMUP_MIN * 60 < DURATION_S)) || { echo "WARMUP_MIN must be a minute of the run (1 to $((DURATION_S / 60 - 1)))" >&2; exit 2; }
bench_ports_free 7100 7101 7200 8080 9000 9200 9300 $(seq 9101 $((9100 + GATEWAYS)))
ulimit -n "$(ulimit -Hn)"
SERVICES=(registry $(for i in $(seq 1 "$GATEWAYS"); do echo "gateway$i"; done) notifier facade)

fds() { ls "/proc/$(cat "$OUT/$1.pid")/fd" 2>/dev/null | wc -l; }
rss() { awk '/^VmRSS/ {print $2}' "/proc/$(cat "$OUT/$1.pid")/status" 2>/dev/null || echo 0; }
cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.1f", ($14 + $15) / hz}' "/proc/$(cat "$OUT/$1.pid")/stat" 2>/dev/null || echo 0; }

bench_system "$GATEWAYS"
bench_facade
sleep 2

echo "== soak: ${DURATION_S} s" >&2
rm -f "$OUT"/soak-flap.{ready,done,stop} "$OUT"/soak-churn-*.json
timeout $((DURATION_S + 300)) "$BIN/flap-bench" --app bench --secret bench-secret --devices "$FLAP_N" --user-prefix soak- \
  --cycle-s 30 --cycles $((DURATION_S / 30)) --settle-s 5 --tail-s 0 --files "$OUT/soak-flap" \
  --timeout-s $((DURATION_S + 240)) >"$OUT/soak-flap.json" 2>"$OUT/soak-flap.log" &
flap=$!
started=$SECONDS
( k=0
  while ((SECONDS - started < DURATION_S)); do
    k=$((k + 1))
    timeout 300 "$BIN/presence-loadgen" --mode presence --app bench --secret bench-secret --devices "$CHURN_N" \
      --rate "$CHURN_RATE" --kick --user-prefix "churn$((k % CHURN_POOL))-" --timeout-s 240 >"$OUT/soak-churn-$k.json" 2>/dev/null || true
  done ) &
churn=$!
INTERNAL_TOKEN=$(bench_token facade soak-query) timeout $((DURATION_S + 120)) "$BIN/query-bench" --via rest --api-key bench-key \
  --prefix soak- --users "$FLAP_N" --rate "$QUERY_RATE" --seconds "$DURATION_S" >"$OUT/soak-query.json" 2>/dev/null &
query=$!

csv="$OUT/soak.csv"
{ printf 'minute,events,received,lag'; for s in "${SERVICES[@]}"; do printf ',%s_rss_kib,%s_cpu_s,%s_fds' "$s" "$s" "$s"; done; echo; } >"$csv"
sample() { # MINUTE
  local e r line
  r=$(bench_sink_unique 9000); e=$(bench_events bench) # in this order: the lag is never below what it was
  line="$1,$e,$r,$((e - r))"
  for s in "${SERVICES[@]}"; do line+=",$(rss "$s"),$(cpu "$s"),$(fds "$s")"; done
  echo "$line" >>"$csv"; echo "   minute $1: events $e, received $r, lag $((e - r))" >&2
}
for minute in $(seq 1 $((DURATION_S / 60))); do
  wait_s=$((started + minute * 60 - SECONDS))
  ((wait_s <= 0)) || sleep "$wait_s"
  sample "$minute"
done

echo "== stopping the load, draining" >&2
wait "$churn" || true
wait "$query" || true
touch "$OUT/soak-flap.stop"; wait "$flap" || true
for _ in $(seq 1 120); do (($(bench_sink_unique 9000) >= $(bench_events bench))) && break; sleep 1; done
sample end

python3 - "$csv" "$OUT" "$WARMUP_MIN" "${SERVICES[@]}" <<'PY'
import csv, glob, json, sys
path, out, warm, services = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
rows = list(csv.DictReader(open(path)))
errors = 0
for f in glob.glob(f"{out}/soak-churn-*.json"):
    try:
        errors += sum(json.load(open(f))["errors"].values())
    except (ValueError, KeyError):
        errors += 1  # a loadgen run that printed no report
flap = json.load(open(f"{out}/soak-flap.json"))
errors += flap["failed_reconnects"] + sum(flap["errors"].values())
query = json.load(open(f"{out}/soak-query.json"))
errors += query["errors"]
churn_runs = len(glob.glob(f"{out}/soak-churn-*.json"))
print(f"| minute | events | callbacks received | lag (events) | " + " | ".join(f"{s} RSS MiB / CPU s / fds" for s in services) + " |")
print("|---" * (4 + len(services)) + "|")
for r in rows:
    cells = [f"{int(r[s + '_rss_kib']) / 1024:.1f} / {r[s + '_cpu_s']} / {r[s + '_fds']}" for s in services]
    print(f"| {r['minute']} | {r['events']} | {r['received']} | {r['lag']} | " + " | ".join(cells) + " |")
# RSS: the last minute under load against minute WARMUP_MIN (the sample after the drain shows
# what a burst of thousands of disconnects left, not growth); lost: after the drain.
drained, base = rows[-1], next(r for r in rows if r["minute"] == str(warm))
end = rows[-2] if len(rows) > 1 else drained
lost = int(drained["events"]) - int(drained["received"])
print()
print(f"Load: {flap['devices']} flapping devices ({flap['flaps']} flaps), {churn_runs} churn runs, "
      f"{query['queries_per_s']:.1f} REST queries/s (p99 {query['latency']['p99_ms']:.1f} ms); "
      f"{int(drained['events'])} events in all.")
ok = lost == 0 and errors == 0
for s in services:
    ratio = int(end[s + "_rss_kib"]) / max(int(base[s + "_rss_kib"]), 1)
    ok = ok and ratio <= 1.1
    print(f"- {s}: RSS {int(base[s + '_rss_kib']) / 1024:.1f} MiB at minute {warm}, {int(end[s + '_rss_kib']) / 1024:.1f} at minute {end['minute']}: {ratio:.2f}x")
print(f"- lost callbacks: {lost}; errors: {errors}")
print("VERDICT:", "pass" if ok else "FAIL", f"(RSS in the last minute of load <= 1.1x minute {warm}, 0 lost, 0 errors)")
PY
