#!/usr/bin/env bash
# The Grafana dashboard (deploy/grafana/dashboards/presence.json) rendered from a real run, without
# Grafana (docs/benchmarks.md, "Dashboard"). Loopback only, bounded in time.
#   Services as in the soak (registry, GATEWAYS gateways, notifier + callback-sink, REST facade) and
#   a private Prometheus on 127.0.0.1:PROM_PORT (data in a temporary directory, removed at exit),
#   scraping every 5 s. Its config is made from deploy/prometheus/prometheus.yml: the same jobs and
#   alert rules, static targets on this run's metrics ports (scripts/dashboard-query.py config).
#   Load for DURATION_S, all at once, at a low scale:
#   - HOLD_N devices logged in at 1,000/s and held, heartbeating every HOLD_HEARTBEAT_S;
#   - FLAP_N flapping devices (flap-bench: every 30 s, 20 % drop their link, back within 2 s);
#   - churn: presence-loadgen runs of CHURN_N devices at CHURN_RATE/s, each with a kick wave;
#   - QUERY_RATE REST batch queries/s of 500 flapping users (query-bench);
#   - the callback sink frozen (SIGSTOP) for OUTAGE_S from a third of the run: connections are
#     accepted, nothing is answered, requests time out (failures, lag, then the drain).
#   As the load stops (after one more scrape), every panel's expressions are queried from 20 s
#   before the load to then ($__rate_interval = 20 s, 4 scrape intervals) into
#   target/bench/dashboard/ and drawn into docs/img/dashboard.png (scripts/plots.sh dashboard).
#   Other work on the machine and steal during the load (lib/bench.sh) go into the subtitle.
#   Then the devices leave and the script checks that the sink received every event.
# Env: DURATION_S (240), HOLD_N (5000), HOLD_HEARTBEAT_S (10), FLAP_N (2000), CHURN_N (1000),
#   CHURN_RATE (500), QUERY_RATE (20), OUTAGE_S (30), GATEWAYS (2), PROM_PORT (19090).
source "$(dirname "$0")/lib/bench.sh"
DURATION_S=${DURATION_S:-240}; HOLD_N=${HOLD_N:-5000}; HOLD_HEARTBEAT_S=${HOLD_HEARTBEAT_S:-10}
FLAP_N=${FLAP_N:-2000}; CHURN_N=${CHURN_N:-1000}; CHURN_RATE=${CHURN_RATE:-500}; QUERY_RATE=${QUERY_RATE:-20}
OUTAGE_S=${OUTAGE_S:-30}; GATEWAYS=${GATEWAYS:-2}; PROM_PORT=${PROM_PORT:-19090}
LG="$BIN/presence-loadgen"
DATA="$OUT/dashboard"

command -v prometheus >/dev/null || { echo "prometheus not found (Debian: apt-get install prometheus)" >&2; exit 1; }
bench_ports_free 7100 7101 7200 8080 9000 9200 9300 9400 "$PROM_PORT" $(seq 9101 $((9100 + GATEWAYS)))
ulimit -n "$(ulimit -Hn)"
prom_dir=$(mktemp -d)
trap 'bench_cleanup; rm -rf "$prom_dir"' EXIT INT TERM

bench_system "$GATEWAYS"
bench_facade

# prometheus: the repo's scrape jobs on this run's ports, up once every target answers.
gateways=$(seq 9101 $((9100 + GATEWAYS)) | sed 's/^/127.0.0.1:/' | paste -sd,)
python3 scripts/dashboard-query.py config --out "$prom_dir/prometheus.yml" --target presence-registry=127.0.0.1:9200 \
  --target connection-gateway="$gateways" --target notifier=127.0.0.1:9300 --target rest-facade=127.0.0.1:9400 \
  --target prometheus="127.0.0.1:$PROM_PORT" >&2
bench_start prometheus prometheus --config.file="$prom_dir/prometheus.yml" --storage.tsdb.path="$prom_dir/data" \
  --web.listen-address="127.0.0.1:$PROM_PORT" --log.level=warn
bench_wait_http "http://127.0.0.1:$PROM_PORT/-/ready" prometheus
targets_up() {
  curl -fsS "http://127.0.0.1:$PROM_PORT/api/v1/targets" | python3 -c 'import json, sys
t = json.load(sys.stdin)["data"]["activeTargets"]; print(sum(x["health"] == "up" for x in t), len(t))'
}
up=0; all=1
for _ in $(seq 1 30); do read -r up all < <(targets_up) || true; ((all > 0 && up == all)) && break; sleep 1; done
echo "== prometheus on 127.0.0.1:$PROM_PORT: $up of $all targets up" >&2

echo "== load for $DURATION_S s" >&2
rm -f "$OUT"/dashboard-hold.stop "$OUT"/dashboard-flap.{ready,done,stop} "$OUT"/dashboard-churn-*.json
started=$SECONDS; t_start=$(date +%s)
timeout $((DURATION_S + 120)) "$LG" --mode presence --app bench --secret bench-secret --devices "$HOLD_N" --rate 1000 \
  --heartbeat-s "$HOLD_HEARTBEAT_S" --hold-s $((DURATION_S + 60)) --stop-file "$OUT/dashboard-hold.stop" \
  --user-prefix dash-held- --timeout-s $((DURATION_S + 90)) >"$OUT/dashboard-hold.json" 2>"$OUT/dashboard-hold.log" &
hold=$!
timeout $((DURATION_S + 120)) "$BIN/flap-bench" --app bench --secret bench-secret --devices "$FLAP_N" --user-prefix dash-flap- \
  --cycle-s 30 --cycles $((DURATION_S / 30)) --settle-s 5 --tail-s 0 --files "$OUT/dashboard-flap" \
  --timeout-s $((DURATION_S + 90)) >"$OUT/dashboard-flap.json" 2>"$OUT/dashboard-flap.log" &
flap=$!
( k=0
  while ((SECONDS - started < DURATION_S)); do
    k=$((k + 1))
    timeout 120 "$LG" --mode presence --app bench --secret bench-secret --devices "$CHURN_N" --rate "$CHURN_RATE" --kick \
      --user-prefix "dash-churn$((k % 10))-" --timeout-s 100 >"$OUT/dashboard-churn-$k.json" 2>/dev/null || true
  done ) &
churn=$!
INTERNAL_TOKEN=$(bench_token facade dashboard-query) timeout $((DURATION_S + 60)) "$BIN/query-bench" --via rest \
  --api-key bench-key --prefix dash-flap- --users "$FLAP_N" --rate "$QUERY_RATE" --seconds "$DURATION_S" \
  >"$OUT/dashboard-query.json" 2>"$OUT/dashboard-query.log" &
query=$!
m0=; m1= # CPU marks (bench_cpu_mark)
bench_cpu_mark m0 "$hold" "$flap" "$churn" "$query"

sleep $((DURATION_S / 3))
t_out0=$(date +%s); echo "== callback sink frozen for $OUTAGE_S s" >&2
kill -STOP "$(cat "$OUT/sink.pid")"
sleep "$OUTAGE_S"
kill -CONT "$(cat "$OUT/sink.pid")"; t_out1=$(date +%s)
wait_s=$((started + DURATION_S - SECONDS)); ((wait_s <= 0)) || sleep "$wait_s"

wait "$churn" || true
wait "$query" || echo "   query-bench failed: see $OUT/dashboard-query.log" >&2
sleep 6 # one more scrape
bench_cpu_mark m1 "$hold" "$flap"
other=$(bench_other_pct "$m0" "$m1"); steal=$(bench_steal_pct "$m0" "$m1")
t_end=$(date +%s)
python3 scripts/dashboard-query.py query --url "http://127.0.0.1:$PROM_PORT" --start $((t_start - 20)) --end "$t_end" \
  --step 5 --rate-interval 20s --out "$DATA" --load-start "$t_start" \
  --marks "{\"the callback sink frozen (SIGSTOP)\": [$t_out0, $t_out1]}" \
  --note "$HOLD_N devices held (heartbeat ${HOLD_HEARTBEAT_S} s), $FLAP_N flapping (flap-bench), churn of $CHURN_N devices at ${CHURN_RATE}/s with kicks, $QUERY_RATE REST queries/s (500 users each); the callback sink frozen for ${OUTAGE_S} s. During the load: other work ${other} %, CPU taken by the hypervisor (steal) ${steal} %" >&2

echo "== stopping the load after $((t_end - t_start)) s (other work ${other} %, steal ${steal} %)" >&2
t_stop=$(date +%s%N)
touch "$OUT/dashboard-hold.stop" "$OUT/dashboard-flap.stop"
wait "$hold" || true; wait "$flap" || true
bench_wait_closed 7100 30
echo "== every event at the sink $(bench_callbacks_done "$t_stop") s after the load stopped; events $(bench_events bench), received $(bench_sink_unique 9000)" >&2
scripts/plots.sh dashboard "$DATA"
