#!/usr/bin/env bash
# Benchmark 4, batch status query (docs/benchmarks.md). Loopback only, bounded in time.
#   1M known users of which 100k online, seeded by SQL and restored by the registry at start
#   (logging 100k devices in through gateways would measure the gateways, not queries; the lease
#   is raised so the seeded gateway id is not expired during the run). Queries of 500 random
#   users: saturation throughput (16 in flight) and p50/p99 at 1,000 queries/s, over gRPC and
#   over REST; side by side, Redis MGET of 500 keys (redis-benchmark, same concurrency).
# Env: USERS (1000000), ONLINE (100000), SECONDS (10), RUNS (3)
source "$(dirname "$0")/lib/bench.sh"
USERS=${USERS:-1000000}; ONLINE=${ONLINE:-100000}; SECONDS_EACH=${SECONDS:-10}; RUNS=${RUNS:-3}
QB="$BIN/query-bench"

bench_build
export INTERNAL_TOKEN; INTERNAL_TOKEN=$(bench_token facade bench-query) # query-bench calls the registry as the facade
bench_database
registry_env=(env RUST_LOG=warn REGISTRY_INTERNAL_SECRET="$BENCH_INTERNAL_SECRET" REGISTRY_LISTEN_ADDR=127.0.0.1:7200 REGISTRY_METRICS_ADDR=127.0.0.1:9200 REGISTRY_GATEWAY_LEASE_S=86400)

echo "== seeding $USERS users, $ONLINE online" >&2
psql "$DATABASE_URL" -q -v users="$USERS" -v online="$ONLINE" <<SQL
INSERT INTO apps (app_id, token_secret, api_key_sha256) VALUES ('bench', 'bench-secret', encode(sha256('bench-key'::bytea), 'hex'));
\i scripts/bench-query-seed.sql
SQL
t0=$(date +%s%N)
bench_start registry "${registry_env[@]}" "$BIN/presence-registry"
bench_wait_http http://127.0.0.1:9200/healthz registry
restore_s=$(echo "scale=1; ($(date +%s%N) - $t0) / 1000000000" | bc)
registry_rss_mib=$(( $(bench_rss_kib registry) / 1024 ))

have_facade=0
if [[ -x "$BIN/rest-facade" ]]; then
  bench_start facade env RUST_LOG=warn INTERNAL_TOKEN="$(bench_token facade bench-facade)" FACADE_LISTEN_ADDR=127.0.0.1:8080 "$BIN/rest-facade"
  bench_wait_http http://127.0.0.1:8080/healthz facade && have_facade=1
fi

echo "== loading Redis: $USERS keys" >&2
redis-cli -n 15 FLUSHDB >/dev/null
python3 - "$USERS" <<'PY' | redis-cli -n 15 --pipe >/dev/null
import sys
n = int(sys.argv[1]); out = sys.stdout
for i in range(n):
    k = f"q{i}"; v = "online" if i % 10 == 0 else "offline"
    out.write(f"*3\r\n$3\r\nSET\r\n${len(k)}\r\n{k}\r\n${len(v)}\r\n{v}\r\n")
PY
mget_keys=$(python3 -c "import random; print(' '.join(f'q{random.randrange($USERS)}' for _ in range(500)))")

for run in $(seq 1 "$RUNS"); do
  echo "== run $run/$RUNS" >&2
  "$QB" --via grpc --users "$USERS" --seconds "$SECONDS_EACH" --concurrency 16 >"$OUT/query-grpc-sat-$run.json"
  "$QB" --via grpc --users "$USERS" --seconds "$SECONDS_EACH" --rate 1000 >"$OUT/query-grpc-1k-$run.json"
  if [[ $have_facade == 1 ]]; then
    "$QB" --via rest --users "$USERS" --seconds "$SECONDS_EACH" --concurrency 16 >"$OUT/query-rest-sat-$run.json"
    "$QB" --via rest --users "$USERS" --seconds "$SECONDS_EACH" --rate 1000 >"$OUT/query-rest-1k-$run.json"
  fi
  # shellcheck disable=SC2086
  redis-benchmark -n 20000 -c 16 --csv MGET $mget_keys 2>/dev/null | tail -n 1 | cut -d, -f2 | tr -d '"' \
    | python3 -c "import json,sys; print(json.dumps({'queries_per_s': float(sys.stdin.read() or 0)}))" >"$OUT/query-redis-$run.json"
done

med() { for run in $(seq 1 "$RUNS"); do [[ -f "$OUT/query-$1-$run.json" ]] && jqv "$OUT/query-$1-$run.json" "$2"; done | median | xargs printf '%.2f'; }
redis=$(med redis 'd["queries_per_s"]')
ratio() { printf '%.2f' "$(echo "scale=4; $1 / $2" | bc)"; }
row() { # label key
  echo "| $1 | $(med "$2-sat" 'd["queries_per_s"]') | $(ratio "$(med "$2-sat" 'd["queries_per_s"]')" "$redis") | $(med "$2-1k" 'd["latency"]["p50_ms"]') | $(med "$2-1k" 'd["latency"]["p99_ms"]') | $(med "$2-1k" 'd["queries_per_s"]') |"
}
cat <<TABLE

Query of 500 users: medians of $RUNS runs of ${SECONDS_EACH}s; $USERS known users, $ONLINE online ($(nproc) cores)
registry restored $USERS users in ${restore_s}s; registry RSS ${registry_rss_mib} MiB
| via | saturation queries/s (16 in flight) | vs Redis MGET 500 | p50 ms @1k/s | p99 ms @1k/s | achieved /s |
|---|---|---|---|---|---|
$(row gRPC grpc)
$( [[ $have_facade == 1 ]] && row REST rest || echo "| REST | (facade not built) | | | | |")
| Redis MGET 500 keys | $redis | 1.00 | - | - | - |
TABLE
