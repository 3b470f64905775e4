#!/usr/bin/env bash
# Benchmark 7, several registry processes (docs/benchmarks.md, docs/scaling.md). Loopback only,
# bounded in time. In one run:
#   A. login storm with ONE registry, before (BEFORE_BIN, a build without partitions) and after
#      this build, alternating, RUNS times each: partitioning must not cost throughput (>= 0.9x);
#   B. the same storm with THREE registries;
#   C. failover: three registries under a paced login load (300/s), kill -9 of one, time until
#      every partition is owned again, TRIALS times (the killed one restarts between trials);
#   D. the 500-id query at 1,000/s over gRPC and REST with three registries, then with one, and
#      how long the registries' threads waited for a core per gRPC query.
# Env: N (20000), RUNS (3), GATEWAYS (2), TRIALS (5), USERS (200000), ONLINE (20000),
#      BEFORE_BIN (unset: part A compares nothing and says so), PARTS (storm,failover,query).
source "$(dirname "$0")/lib/bench.sh"
N=${N:-20000}; RUNS=${RUNS:-3}; GATEWAYS=${GATEWAYS:-2}; TRIALS=${TRIALS:-5}
USERS=${USERS:-200000}; ONLINE=${ONLINE:-20000}; PARTS=${PARTS:-storm,failover,query}
part() { [[ ",$PARTS," == *",$1,"* ]]; }
AFTER_BIN=$BIN
LG="$AFTER_BIN/presence-loadgen"; QB="$AFTER_BIN/query-bench"

bench_build
bench_ports_free 7100 7200 7201 7202 9200 9210 9220 8080

# storm BIN REGISTRIES TAG: one login storm of N devices on a fresh database; prints logins/s.
storm() {
  BIN=$1
  bench_database
  bench_registries "$2"
  bench_gateways "$GATEWAYS" REGISTRY_URL=http://127.0.0.1:7200
  "$LG" --mode presence --app bench --secret bench-secret --timeout-s 120 --devices "$N" --user-prefix "$3" >"$OUT/scaleout-$3.json"
  bench_stop gateway; bench_stop registry
  jqv "$OUT/scaleout-$3.json" 'd["rate_per_s"]'
}

declare -a before=() after=() three=() failovers=()
part storm || RUNS=0
for run in $(seq 1 "$RUNS"); do
  echo "== storm run $run/$RUNS" >&2
  if [[ -n ${BEFORE_BIN:-} ]]; then before+=("$(storm "$BEFORE_BIN" 1 "b$run")"); fi
  after+=("$(storm "$AFTER_BIN" 1 "a$run")")
  three+=("$(storm "$AFTER_BIN" 3 "t$run")")
done
BIN=$AFTER_BIN
med() { printf '%s\n' "$@" | median | xargs printf '%.0f'; }

part failover || TRIALS=0
echo "== failover: $TRIALS trials" >&2
if ((TRIALS > 0)); then
bench_database
bench_registries 3 REGISTRY_PARTITION_LEASE_MS=6000
bench_gateways "$GATEWAYS" REGISTRY_URL=http://127.0.0.1:7200
for trial in $(seq 1 "$TRIALS"); do
  "$LG" --mode presence --app bench --secret bench-secret --timeout-s 60 --devices 3000 --rate 300 \
    --user-prefix "f$trial" >"$OUT/scaleout-failover-load-$trial.json" &
  load=$!
  sleep 3
  victim=$(( (trial % 3) + 1 ))
  t0=$(date +%s%N)
  kill -KILL "$(cat "$OUT/registry$victim.pid")"
  p=$(psql "$DATABASE_URL" -qtAc "SELECT count(*) FROM registry_partitions")
  until [[ $(bench_owned "registry-$victim") == "$p" ]]; do
    (( ($(date +%s%N) - t0) < 30000000000 )) || { echo "failover did not complete in 30 s" >&2; exit 1; }
    sleep 0.01
  done
  failovers+=("$(echo "scale=1; ($(date +%s%N) - $t0) / 1000000" | bc)")
  wait "$load"
  errors=$(jqv "$OUT/scaleout-failover-load-$trial.json" 'sum(d["errors"].values())')
  echo "trial $trial: registry-$victim killed, partitions owned again after ${failovers[-1]} ms; load errors: $errors" >&2
  echo "$errors" >"$OUT/scaleout-failover-errors-$trial.txt"
  rm -f "$OUT/registry$victim.pid"
  bench_start "registry$victim" env RUST_LOG=warn REGISTRY_INTERNAL_SECRET="$BENCH_INTERNAL_SECRET" REGISTRY_ID="registry-$victim" \
    REGISTRY_LISTEN_ADDR="127.0.0.1:$((7199 + victim))" REGISTRY_METRICS_ADDR="127.0.0.1:$((9190 + 10 * victim))" "$BIN/presence-registry"
  bench_wait_http "http://127.0.0.1:$((9190 + 10 * victim))/healthz" "registry$victim"
  bench_wait_owned 3
done
bench_stop gateway; bench_stop registry
fi
fail_p50=$(printf '%s\n' "${failovers[@]}" | median)
fail_max=$(printf '%s\n' "${failovers[@]}" | sort -g | tail -n 1)
fail_errors=$( ((TRIALS > 0)) && cat "$OUT"/scaleout-failover-errors-*.txt | paste -sd+ | bc || echo n/a)

echo "== query: $USERS users, $ONLINE online" >&2
export INTERNAL_TOKEN; INTERNAL_TOKEN=$(bench_token facade bench-query)
query_run() { # REGISTRIES TAG
  bench_database
  psql "$DATABASE_URL" -qc "INSERT INTO apps (app_id, token_secret, api_key_sha256) VALUES ('bench', 'bench-secret', encode(sha256('bench-key'::bytea), 'hex'))" >/dev/null
  psql "$DATABASE_URL" -q -v users="$USERS" -v online="$ONLINE" -f scripts/bench-query-seed.sql
  bench_registries "$1" REGISTRY_GATEWAY_LEASE_S=86400
  bench_start facade env RUST_LOG=warn INTERNAL_TOKEN="$(bench_token facade bench-facade)" REGISTRY_URL=http://127.0.0.1:7200 \
    FACADE_LISTEN_ADDR=127.0.0.1:8080 "$BIN/rest-facade"
  bench_wait_http http://127.0.0.1:8080/healthz facade
  # The registries' threads' wait for a core during the gRPC run, per query: on one box, what
  # the processes of a forwarded query cost each other.
  local runq0; runq0=$(bench_runq_us registry)
  "$QB" --via grpc --users "$USERS" --seconds 10 --rate 1000 >"$OUT/scaleout-query-grpc-$2.json"
  python3 - "$OUT/scaleout-query-grpc-$2.json" "$runq0" "$(bench_runq_us registry)" <<'PY'
import json, sys
path, before, after = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
d = json.load(open(path))
d["registry_runq_us"] = (after - before) / max(d["queries"], 1)
json.dump(d, open(path, "w"))
PY
  "$QB" --via rest --users "$USERS" --seconds 10 --rate 1000 >"$OUT/scaleout-query-rest-$2.json"
  bench_stop facade; bench_stop registry
}
if part query; then query_run 3 three; query_run 1 one; fi
q() { jqv "$OUT/scaleout-query-$1.json" "$2" 2>/dev/null || echo n/a; }

ratio() { printf '%.2f' "$(echo "scale=4; $1 / $2" | bc)"; }
a=$(med "${after[@]:-0}"); t=$(med "${three[@]:-0}")
if [[ -n ${BEFORE_BIN:-} ]]; then b=$(med "${before[@]}"); ab="$(ratio "$a" "$b")x"; else b="n/a"; ab="n/a (set BEFORE_BIN)"; fi
cat <<TABLE

Several registries: $N devices per storm, $GATEWAYS gateways, medians of $RUNS runs, everything on this machine ($(nproc) cores)
| login storm | runs (logins/s) | median | vs before |
|---|---|---|---|
| before, 1 registry | ${before[*]:-n/a} | $b | 1.00 |
| after, 1 registry | ${after[*]} | $a | $ab |
| after, 3 registries | ${three[*]} | $t | $( [[ $b == n/a ]] && echo n/a || echo "$(ratio "$t" "$b")x") |

Failover (kill -9 of one of 3 registries under 300 logins/s, until every partition is owned again), $TRIALS trials:
  ms: ${failovers[*]}   p50 $fail_p50 ms, max $fail_max ms; login errors during all trials: $fail_errors

Query of 500 ids at 1,000/s ($USERS users):
| registries | gRPC p50 ms | gRPC p99 ms | registries' wait for a core, µs per gRPC query | REST p50 ms | REST p99 ms |
|---|---|---|---|---|---|
| 3 | $(q grpc-three 'd["latency"]["p50_ms"]') | $(q grpc-three 'd["latency"]["p99_ms"]') | $(q grpc-three 'round(d["registry_runq_us"])') | $(q rest-three 'd["latency"]["p50_ms"]') | $(q rest-three 'd["latency"]["p99_ms"]') |
| 1 | $(q grpc-one 'd["latency"]["p50_ms"]') | $(q grpc-one 'd["latency"]["p99_ms"]') | $(q grpc-one 'round(d["registry_runq_us"])') | $(q rest-one 'd["latency"]["p50_ms"]') | $(q rest-one 'd["latency"]["p99_ms"]') |
TABLE
