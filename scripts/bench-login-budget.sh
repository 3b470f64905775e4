#!/usr/bin/env bash
# Benchmark 1b, where a login's CPU goes (docs/benchmarks.md). Loopback only, bounded in time.
#   The 15k storm of bench-login.sh (N devices log in, then a second device per user kicks each
#   first one) and Mosquitto's (CONNECT, then a client-id takeover each), with the CPU seconds of
#   every process counted from before each storm until its work is done: for presence, until the
#   sink holds every callback of the storm (the notifier's share is paid either way; in a
#   sustained storm it competes with the logins). Prints the CPU per connect+login (both waves:
#   2 x N operations) of each process, and the login rate this machine's cores could carry if
#   the gateways cost nothing: what bounds the "1.3x Mosquitto" target whatever the gateway does.
# Env: N (15000), RUNS (3), GATEWAYS (2), GATEWAY_WORKER_THREADS (1)
source "$(dirname "$0")/lib/bench.sh"
N=${N:-15000}; RUNS=${RUNS:-3}; GATEWAYS=${GATEWAYS:-2}
LG="$BIN/presence-loadgen"

bench_build
bench_database
bench_registry
bench_gateways "$GATEWAYS" GATEWAY_WORKER_THREADS="${GATEWAY_WORKER_THREADS:-1}"
bench_sink 9000
bench_notifier
bench_mosquitto 1884

# The bench database's Postgres backends (they come and go with the pools; the ones alive at both
# marks are what a storm pays, plus the WAL writer and checkpointer that every commit feeds).
postgres_cpu_s() {
  local ticks=0 pid
  for pid in $(pgrep -f "postgres: .*presence_bench" || true) $(pgrep -f "postgres: .*(walwriter|checkpointer|background writer)" || true); do
    ticks=$((ticks + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
  done
  echo "scale=2; $ticks / $(getconf CLK_TCK)" | bc
}
# split VAR: stores in VAR the CPU seconds so far of each part, in the order of PARTS. Called
# directly, not in $(...): the load generator's share is this shell's waited-for children.
PARTS=(gateway registry notifier sink postgres mosquitto loadgen machine)
split() {
  local m hz; hz=$(getconf CLK_TCK)
  bench_cpu_mark m
  printf -v "$1" '%s %s' "$(bench_cpu_s gateway) $(bench_cpu_s registry) $(bench_cpu_s notifier) $(bench_cpu_s sink)" \
    "$(postgres_cpu_s) $(bench_cpu_s mosquitto) $(echo "$m" | awk -v hz="$hz" '{print $4 / hz, $2 / hz}')"
}
# per_op BEFORE AFTER OPS FILE: µs per operation of each part, as JSON.
per_op() {
  python3 - "$1" "$2" "$3" "$4" "${PARTS[@]}" <<'PY'
import json, sys
a, b, ops, path, names = sys.argv[1].split(), sys.argv[2].split(), int(sys.argv[3]), sys.argv[4], sys.argv[5:]
json.dump({n: (float(y) - float(x)) * 1e6 / ops for n, x, y in zip(names, a, b)}, open(path, "w"))
PY
}

for run in $(seq 1 "$RUNS"); do
  echo "== run $run/$RUNS" >&2
  t0=$(date +%s%N); split before
  "$LG" --mode presence --app bench --secret bench-secret --timeout-s 120 --devices "$N" --kick \
    --user-prefix "b${run}u" >"$OUT/budget-presence-$run.json"
  done_s=$(bench_callbacks_done "$t0")
  [[ $done_s == timeout* ]] && { echo "callbacks not delivered: $done_s" >&2; exit 1; }
  split after; per_op "$before" "$after" $((2 * N)) "$OUT/budget-presence-cpu-$run.json"
  split before
  "$LG" --mode mqtt --target 127.0.0.1:1884 --devices "$N" --kick --user-prefix "bm${run}u" >"$OUT/budget-mqtt-$run.json"
  split after; per_op "$before" "$after" $((2 * N)) "$OUT/budget-mqtt-cpu-$run.json"
done

med() { for run in $(seq 1 "$RUNS"); do jqv "$OUT/budget-$1-$run.json" "$2"; done | median | xargs printf '%.0f'; }
row() { # LABEL KEY PARTS...
  local label=$1 key=$2 cells="" part; shift 2
  for part in "${PARTS[@]}"; do cells+=" $(med "$key-cpu" "d['$part']") |"; done
  echo "| $label | $(med "$key" 'd["rate_per_s"]') |$cells"
}
pres=$(med presence 'd["rate_per_s"]'); mq=$(med mqtt 'd["rate_per_s"]')
# Everything a login costs but the gateways: the load generator, the registry, the notifier and
# the sink, Postgres, and the kernel work those do (all inside the machine's busy time).
rest_us=$(med presence-cpu 'd["machine"] - d["gateway"]')
ours_us=$(med presence-cpu 'd["gateway"] + d["registry"] + d["notifier"] + d["postgres"]')
durable_us=$(med presence-cpu 'd["registry"] + d["notifier"] + d["postgres"]')
mq_us=$(med mqtt-cpu 'd["mosquitto"]')
cores=$(nproc)
ratio() { printf '%.2f' "$(echo "scale=4; $1 / $2" | bc)"; }
cat <<TABLE

Where a connect+login's CPU goes: medians of $RUNS runs, $N devices + a kick (takeover) each, $GATEWAYS gateways ($cores cores)
µs of CPU per operation (2 x $N operations: the logins and the kicking logins); "machine" is all busy CPU of the machine
| run | ops/s (first wave) | $(printf '%s | ' "${PARTS[@]}")
|---|---|---|---|---|---|---|---|---|---|
$(row presence presence)
$(row Mosquitto mqtt)

presence vs Mosquitto: $(ratio "$pres" "$mq")x. Server CPU per operation: presence (gateways, registry, notifier, Postgres) ${ours_us} µs, Mosquitto ${mq_us} µs ($(ratio "$ours_us" "$mq_us")x); registry + notifier + Postgres alone ${durable_us} µs.
Busy CPU per operation but the gateways': ${rest_us} µs. With gateways that cost nothing, $cores cores carry at most $(echo "$cores * 1000000 / $rest_us" | bc) logins/s: $(ratio "$(echo "$cores * 1000000 / $rest_us" | bc)" "$mq")x Mosquitto's rate in this run (the target is 1.3x).
TABLE
