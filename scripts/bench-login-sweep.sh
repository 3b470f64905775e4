#!/usr/bin/env bash
# Login latency against offered load (docs/benchmarks.md, section 1). Loopback only, bounded in time.
#   One system, as bench-login.sh starts it (registry, GATEWAYS gateways, notifier, callback-sink),
#   then one paced login run per offered rate in RATES, lowest first: rate x STEP_S devices (at most
#   MAX_DEVICES), one per user, fresh users each step, held until the run ends and then dropped.
#   Rate 0 is saturation: SAT_N devices as fast as the system takes them (bench-login.sh's storm).
#   Paced runs allow CONCURRENCY handshakes in flight per load generator process, so the offered
#   rate is kept up while latency grows: above what the system takes, a step queues for its whole
#   length and its latency grows with STEP_S (not a steady state). Before each step the sink has
#   every event (the previous step's logins and disconnects) and, with QUIET_WAIT_S, the machine
#   is quiet.
#   Per step: offered and achieved logins/s (first wave: devices / seconds until the last answer),
#   connect+login latency p50/p90/p99/max, errors, other work on the machine and steal (%).
#   Raw results: target/bench/login-sweep.csv (one row per step and run); prints medians of RUNS.
#   Picture: scripts/plots.sh login-sweep.
# Env: RATES ("500 1000 2000 3000 4000 6000 0"), STEP_S (10), MAX_DEVICES (50000), SAT_N (50000),
#   RUNS (1), GATEWAYS (4), CONCURRENCY (4096), QUIET_WAIT_S (30), QUIET_PCT (20).
source "$(dirname "$0")/lib/bench.sh"
RATES=${RATES:-500 1000 2000 3000 4000 6000 0}; STEP_S=${STEP_S:-10}; MAX_DEVICES=${MAX_DEVICES:-50000}
SAT_N=${SAT_N:-50000}; RUNS=${RUNS:-1}; GATEWAYS=${GATEWAYS:-4}; CONCURRENCY=${CONCURRENCY:-4096}
export QUIET_WAIT_S=${QUIET_WAIT_S:-30}
CSV="$OUT/login-sweep.csv"
LG="$BIN/presence-loadgen"

ulimit -n "$(ulimit -Hn)"
bench_ports_free 7100 7101 7200 9000 9200 9300 $(seq 9101 $((9100 + GATEWAYS)))
bench_system "$GATEWAYS"
sleep 1

# devices RATE: how many devices the step logs in.
devices() {
  if (($1 == 0)); then echo "$SAT_N"; else echo $(($1 * STEP_S < MAX_DEVICES ? $1 * STEP_S : MAX_DEVICES)); fi
}

# step RUN RATE: one login run into login-sweep-<run>-<rate>.json; appends its CSV row.
step() {
  local run=$1 rate=$2 n json m0 m1 t0 cb
  local pace=(--concurrency "$CONCURRENCY" --rate "$rate")
  n=$(devices "$rate"); json="$OUT/login-sweep-$run-$rate.json"
  ((rate > 0)) || pace=()
  bench_wait_quiet
  t0=$(date +%s%N); bench_cpu_mark m0
  "$LG" --mode presence --app bench --secret bench-secret --timeout-s 120 --devices "$n" "${pace[@]}" \
    --user-prefix "sw${run}r${rate}u" >"$json" 2>"$OUT/login-sweep-$run-$rate.log"
  bench_cpu_mark m1
  bench_wait_closed 7100 30
  cb=$(bench_callbacks_done "$t0")
  python3 - "$json" "$run" "$rate" "$(bench_other_pct "$m0" "$m1")" "$cb" "$(bench_steal_pct "$m0" "$m1")" >>"$CSV" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
c = d["connect"]
print(",".join(str(v) for v in (sys.argv[2], sys.argv[3], d["devices"], d["connected"], round(d["rate_per_s"], 1),
                                 c["p50_ms"], c["p90_ms"], c["p99_ms"], c["max_ms"], sum(d["errors"].values()),
                                 sys.argv[4], sys.argv[5], sys.argv[6])))
PY
  echo "   offered $rate/s: $(tail -n 1 "$CSV")" >&2
}

echo "run,offered_per_s,devices,connected,achieved_per_s,p50_ms,p90_ms,p99_ms,max_ms,errors,other_pct,callbacks_done_s,steal_pct" >"$CSV"
started=$SECONDS
for run in $(seq 1 "$RUNS"); do
  for rate in $RATES; do
    echo "== run $run/$RUNS: offered $rate logins/s ($(devices "$rate") devices)" >&2
    step "$run" "$rate"
  done
done

python3 - "$CSV" "$RUNS" "$GATEWAYS" "$(nproc)" "$((SECONDS - started))" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
print(f"\nLogin latency against offered load: medians of {sys.argv[2]} run(s), {sys.argv[3]} gateways, "
      f"everything on this machine ({sys.argv[4]} cores); steps took {sys.argv[5]} s")
print("| offered logins/s | devices | achieved logins/s | p50 ms | p90 ms | p99 ms | max ms | errors | other work % | steal % |")
print("|---|---|---|---|---|---|---|---|---|---|")
for rate in dict.fromkeys(r["offered_per_s"] for r in rows):
    mine = [r for r in rows if r["offered_per_s"] == rate]
    med = lambda k: statistics.median(float(r[k]) for r in mine)
    print(f"| {'saturation' if rate == '0' else rate} | {mine[0]['devices']} | {med('achieved_per_s'):.0f} | "
          f"{med('p50_ms'):.1f} | {med('p90_ms'):.1f} | {med('p99_ms'):.1f} | {med('max_ms'):.1f} | "
          f"{med('errors'):.0f} | {med('other_pct'):.0f} | {med('steal_pct'):.0f} |")
print(f"\nRaw: {sys.argv[1]}; picture: scripts/plots.sh login-sweep")
PY
