#!/usr/bin/env bash
# Benchmark 4, batch status query (docs/benchmarks.md). Loopback only, bounded in time.
#   1M known users of which 100k online, seeded by SQL and restored by the registry at start
#   (logging 100k devices in through gateways would measure the gateways, not queries; the lease
#   is raised so the seeded gateway id is not expired during the run). Queries of 500 random
#   users: saturation throughput (16 in flight) and p50/p99 at 1,000 queries/s, over gRPC and
#   over REST; side by side, Redis MGET of 500 keys (redis-benchmark, same concurrency): the same
#   500 keys in every command (the baseline the targets were set against), and 500 random keys of
#   the 1M in each command (`-r`), the access pattern of the queries. A saturation run of 1-id
#   queries tells a gRPC call's fixed cost from the cost per user.
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
    v = "online" if i % 10 == 0 else "offline"
    # q<n> for the fixed keys; r<n, 12 digits> for redis-benchmark's __rand_int__.
    for k in (f"q{i}", f"r{i:012d}"):
        out.write(f"*3\r\n$3\r\nSET\r\n${len(k)}\r\n{k}\r\n${len(v)}\r\n{v}\r\n")
PY
mget_keys=$(python3 -c "import random; print(' '.join(f'q{random.randrange($USERS)}' for _ in range(500)))")
mget_random_keys=$(python3 -c "print(' '.join(['r__rand_int__'] * 500))")
# The server's CPU per query, robust to what else the machine runs (a shared host steals time),
# and the client's (the load generator shares the cores: with a server that cost nothing, the
# cores would carry at most cores / client CPU queries per second):
# cpu_per_query FILE CPU_S_BEFORE CPU_S_AFTER MARK_BEFORE MARK_AFTER adds server_cpu_us and
# client_cpu_us (per query) to FILE's JSON; the marks are bench_cpu_mark's (this shell's children).
cpu_per_query() {
  python3 - "$@" "$(getconf CLK_TCK)" <<'PY'
import json, sys
path, before, after, m0, m1, hz = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5], float(sys.argv[6])
d = json.load(open(path))
d["server_cpu_us"] = (after - before) * 1e6 / max(d["queries"], 1)
d["client_cpu_us"] = (float(m1.split()[3]) - float(m0.split()[3])) / hz * 1e6 / max(d["queries"], 1)
json.dump(d, open(path, "w"))
PY
}
services_cpu_s() { for name in "$@"; do bench_cpu_s "$name"; done | paste -sd+ | bc; }
pgrep -o -x redis-server >"$OUT/redis-server.pid"
redis_mget() { # OUT_NAME ARGS...: queries/s of redis-benchmark's MGET, and redis-server's CPU per MGET
  local name=$1 c0 m0 m1; shift
  c0=$(bench_cpu_s redis-server); bench_cpu_mark m0
  redis-benchmark -n 20000 -c 16 --csv "$@" 2>/dev/null >"$OUT/query-$name-$run.csv"
  bench_cpu_mark m1
  tail -n 1 "$OUT/query-$name-$run.csv" | cut -d, -f2 | tr -d '"' \
    | python3 -c "import json,sys; print(json.dumps({'queries_per_s': float(sys.stdin.read() or 0), 'queries': 20000}))" >"$OUT/query-$name-$run.json"
  cpu_per_query "$OUT/query-$name-$run.json" "$c0" "$(bench_cpu_s redis-server)" "$m0" "$m1"
}
saturate() { # NAME VIA BATCH SERVICES...: a closed-loop run over VIA, with the CPU per query of SERVICES
  local via=$2 batch=$3 c0 m0 m1 file="$OUT/query-$1-sat-$run.json"; shift 3
  c0=$(services_cpu_s "$@"); bench_cpu_mark m0
  "$QB" --via "$via" --batch "$batch" --users "$USERS" --seconds "$SECONDS_EACH" --concurrency 16 >"$file"
  bench_cpu_mark m1
  cpu_per_query "$file" "$c0" "$(services_cpu_s "$@")" "$m0" "$m1"
}

for run in $(seq 1 "$RUNS"); do
  echo "== run $run/$RUNS" >&2
  saturate grpc grpc 500 registry
  # One id per query: what a call costs whatever it asks (HTTP/2, gRPC, the task), to tell it
  # from the cost per user.
  saturate grpc-one grpc 1 registry
  "$QB" --via grpc --users "$USERS" --seconds "$SECONDS_EACH" --rate 1000 >"$OUT/query-grpc-1k-$run.json"
  if [[ $have_facade == 1 ]]; then
    saturate rest rest 500 facade registry
    "$QB" --via rest --users "$USERS" --seconds "$SECONDS_EACH" --rate 1000 >"$OUT/query-rest-1k-$run.json"
  fi
  # shellcheck disable=SC2086
  redis_mget redis MGET $mget_keys
  # shellcheck disable=SC2086
  redis_mget redis-random -r "$USERS" MGET $mget_random_keys
done

med() { for run in $(seq 1 "$RUNS"); do [[ -f "$OUT/query-$1-$run.json" ]] && jqv "$OUT/query-$1-$run.json" "$2"; done | median | xargs printf '%.2f'; }
redis=$(med redis 'd["queries_per_s"]')
redis_random=$(med redis-random 'd["queries_per_s"]')
redis_cpu=$(med redis-random 'd["server_cpu_us"]')
ratio() { printf '%.2f' "$(echo "scale=4; $1 / $2" | bc)"; }
cores=$(nproc)
# ceiling KEY: queries/s the cores would carry with a server that cost nothing (client CPU only).
ceiling() { printf '%.0f' "$(echo "scale=4; $cores * 1000000 / $(med "$1" 'd["client_cpu_us"]')" | bc)"; }
row() { # label key
  local sat cpu; sat=$(med "$2-sat" 'd["queries_per_s"]'); cpu=$(med "$2-sat" 'd["server_cpu_us"]')
  echo "| $1 | $sat | $(ratio "$sat" "$redis") | $(ratio "$sat" "$redis_random") | $cpu | $(ratio "$redis_cpu" "$cpu") | $(med "$2-sat" 'd["client_cpu_us"]') | $(ratio "$(ceiling "$2-sat")" "$redis") | $(med "$2-1k" 'd["latency"]["p50_ms"]') | $(med "$2-1k" 'd["latency"]["p99_ms"]') | $(med "$2-1k" 'd["queries_per_s"]') |"
}
cat <<TABLE

Query of 500 users: medians of $RUNS runs of ${SECONDS_EACH}s; $USERS known users, $ONLINE online ($(nproc) cores)
registry restored $USERS users in ${restore_s}s; registry RSS ${registry_rss_mib} MiB
| via | saturation queries/s (16 in flight) | vs Redis MGET 500 | vs Redis MGET 500 random | server CPU µs/query | Redis's CPU / ours | client CPU µs/query | with a free server, at most (vs Redis MGET 500) | p50 ms @1k/s | p99 ms @1k/s | achieved /s |
|---|---|---|---|---|---|---|---|---|---|---|
$(row gRPC grpc)
| gRPC, 1 id per query (a call's fixed cost) | $(med grpc-one-sat 'd["queries_per_s"]') | - | - | $(med grpc-one-sat 'd["server_cpu_us"]') | - | $(med grpc-one-sat 'd["client_cpu_us"]') | - | - | - | - |
$( [[ $have_facade == 1 ]] && row REST rest || echo "| REST | (facade not built) | | | | | | | | | |")
| Redis MGET 500 keys (the same each time) | $redis | 1.00 | $(ratio "$redis" "$redis_random") | $(med redis 'd["server_cpu_us"]') | - | $(med redis 'd["client_cpu_us"]') | $(ratio "$(ceiling redis)" "$redis") | - | - | - |
| Redis MGET 500 random keys | $redis_random | $(ratio "$redis_random" "$redis") | 1.00 | $redis_cpu | 1.00 | $(med redis-random 'd["client_cpu_us"]') | $(ratio "$(ceiling redis-random)" "$redis") | - | - | - |
"with a free server, at most": $cores cores / the client's CPU per query, as a ratio to Redis MGET 500's rate.
TABLE
