#!/usr/bin/env bash
# Benchmark 5, callbacks (docs/benchmarks.md). Loopback only, bounded in time.
#   Two apps: `cba` calls back a fast callback-sink (127.0.0.1:9000), `cbb` a slow and flaky one
#   (127.0.0.1:9001: SLOW_DELAY_MS per request, SLOW_FAIL_PCT % answered 500). Each loadgen run
#   logs N devices in and then drops them, so an app gets 2 events per device (login, then
#   disconnect/link_close in a burst when the loadgen exits). Per run, from a fresh database and
#   fresh services:
#   1. alone (the baseline): only app A's load; deliveries/s to the fast sink = unique events /
#      (last - first delivery), from the sink's /stats;
#   2. backlog drain: the fast sink is killed, DRAIN_N devices of app A make 2 x DRAIN_N events,
#      the sink stays down DOWN_S more seconds, then starts again; time from its start to the last
#      delivery (includes the notifier's retry backoff), and the first-to-last delivery rate;
#   3. with the slow app: app A's and app B's loadgens run in parallel (N each); A's deliveries/s
#      vs alone is the slowdown. Both loads share this machine's cores, so A's events are also
#      produced more slowly: the table shows A's login rate in each phase.
#   4. isolation from a dead receiver, at a paced load (ISO_RATE logins/s of app A for ISO_S
#      seconds, so that the shared cores are not the limit): (a) app A alone; (b) the same while
#      app C (`cbc`, 127.0.0.1:9002) gets the same paced load and its receiver is dead (nothing
#      listens) for B_DOWN_S seconds, then comes back. App B's slow backlog of phase 3 is dropped
#      first (its callback_url set to NULL). From the fast sink: app A's login callbacks delivered/s
#      (first to last) and their latency p50/p99 (receive time - event_time_ms); app C's backlog
#      delivered after its receiver is back, and the notifier's peak RSS.
#   Every phase checks zero lost (the sink's unique event ids == app A's presence_events of the
#   phase) and counts duplicates (requests - unique). App B's progress is shown as delivered/events.
#   Notifier configuration used (env, not code): NOTIFIER_CONCURRENCY_PER_APP=CONCURRENCY,
#   NOTIFIER_REQUEST_TIMEOUT_MS=REQUEST_TIMEOUT_MS (above SLOW_DELAY_MS, so app B is slow rather
#   than timing out on every request; its other settings are the defaults).
# Env: N (20000), DRAIN_N (N), RUNS (3), GATEWAYS (4), CONCURRENCY (256), REQUEST_TIMEOUT_MS (5000),
#   SLOW_DELAY_MS (2000), SLOW_FAIL_PCT (10), DOWN_S (5), A_RATE (0: app A's logins/s, 0 = unpaced),
#   DELIVER_MAX_S (300: bound on waiting for deliveries).
source "$(dirname "$0")/lib/bench.sh"
N=${N:-20000}; DRAIN_N=${DRAIN_N:-$N}; RUNS=${RUNS:-3}; GATEWAYS=${GATEWAYS:-4}
CONCURRENCY=${CONCURRENCY:-256}; REQUEST_TIMEOUT_MS=${REQUEST_TIMEOUT_MS:-5000}
SLOW_DELAY_MS=${SLOW_DELAY_MS:-2000}; SLOW_FAIL_PCT=${SLOW_FAIL_PCT:-10}; DOWN_S=${DOWN_S:-5}
A_RATE=${A_RATE:-0}; DELIVER_MAX_S=${DELIVER_MAX_S:-300}
ISO_RATE=${ISO_RATE:-500}; ISO_S=${ISO_S:-60}; B_DOWN_S=${B_DOWN_S:-60}; PHASES=${PHASES:-1 2 3 4}
ISO_N=$((ISO_RATE * ISO_S))
phase() { [[ " $PHASES " == *" $1 "* ]]; }
LG="$BIN/presence-loadgen"

ulimit -n "$(ulimit -Hn)"
bench_ports_free 7100 7200 9200 9000 9001 9002 9300 $(seq 9101 $((9100 + GATEWAYS)))
bench_build

loadgen() { # APP PREFIX DEVICES [args...]
  local app=$1 prefix=$2 n=$3; shift 3
  timeout 330 "$LG" --mode presence --app "$app" --secret "$app-secret" --devices "$n" --timeout-s 300 \
    --user-prefix "$prefix" "$@"
}
events() { psql "$DATABASE_URL" -qtAc "SELECT count(*) FROM presence_events WHERE app_id = '$1' AND user_id LIKE '$2%'"; }
online() { psql "$DATABASE_URL" -qtAc "SELECT count(*) FROM devices WHERE app_id = '$1' AND user_id LIKE '$2%'"; }
sink_stats() { curl -fsS "http://127.0.0.1:$1/stats" 2>/dev/null || echo '{"unique": 0}'; }
unique() { sink_stats "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["unique"])'; }
fast_sink() { bench_start sink-fast "$BIN/callback-sink" --addr 127.0.0.1:9000; bench_wait_http http://127.0.0.1:9000/stats sink-fast; }

# settle PORT APP PREFIX LABEL: waits (<= DELIVER_MAX_S) until APP's devices of PREFIX are all
# offline, their events stop growing and the sink on PORT holds them all; writes the sink's /stats plus "expected" to LABEL.json.
settle() {
  local port=$1 app=$2 prefix=$3 label=$4 exp=0 prev=-1 got=0 deadline=$((SECONDS + DELIVER_MAX_S))
  while ((SECONDS < deadline)); do
    exp=$(events "$app" "$prefix"); got=$(unique "$port")
    ((exp == prev && got >= exp && exp > 0)) && (($(online "$app" "$prefix") == 0)) && break
    prev=$exp; sleep 0.5
  done
  ((got >= exp)) || echo "   $label: only $got of $exp delivered after ${DELIVER_MAX_S}s" >&2
  sink_stats "$port" | python3 -c "import json,sys; d=json.load(sys.stdin); d['expected']=$exp; print(json.dumps(d))" >"$OUT/$label.json"
}

for run in $(seq 1 "$RUNS"); do
  echo "== run $run/$RUNS" >&2
  bench_database
  bench_registry
  bench_app cba cba-secret http://127.0.0.1:9000/cb cba-cb
  bench_app cbb cbb-secret http://127.0.0.1:9001/cb cbb-cb
  bench_gateways "$GATEWAYS"
  fast_sink
  bench_start sink-slow "$BIN/callback-sink" --addr 127.0.0.1:9001 --delay-ms "$SLOW_DELAY_MS" --fail-pct "$SLOW_FAIL_PCT"
  bench_wait_http http://127.0.0.1:9001/stats sink-slow
  bench_start notifier env RUST_LOG=warn NOTIFIER_METRICS_ADDR=127.0.0.1:9300 \
    NOTIFIER_CONCURRENCY_PER_APP="$CONCURRENCY" NOTIFIER_REQUEST_TIMEOUT_MS="$REQUEST_TIMEOUT_MS" "$BIN/notifier"
  bench_wait_http http://127.0.0.1:9300/healthz notifier

  bench_app cbc cbc-secret http://127.0.0.1:9002/cb cbc-cb
  if phase 1; then
  echo "   1. app A alone: $N devices" >&2
  loadgen cba "a${run}u" "$N" --rate "$A_RATE" >"$OUT/cb-alone-lg-$run.json" 2>"$OUT/cb-alone-lg-$run.log"
  settle 9000 cba "a${run}u" "cb-alone-$run"
  fi

  if phase 2; then
  echo "   2. backlog drain: fast sink down, $DRAIN_N devices" >&2
  bench_stop sink-fast
  loadgen cba "d${run}u" "$DRAIN_N" >"$OUT/cb-drain-lg-$run.json" 2>"$OUT/cb-drain-lg-$run.log"
  prev=-1; for _ in $(seq 1 60); do
    cur=$(events cba "d${run}u"); ((cur == prev)) && (($(online cba "d${run}u") == 0)) && break; prev=$cur; sleep 1
  done
  sleep "$DOWN_S"
  t0_ms=$(($(date +%s%N) / 1000000))
  fast_sink
  settle 9000 cba "d${run}u" "cb-drain-$run"
  echo "$t0_ms" >"$OUT/cb-drain-t0-$run.txt"
  fi

  if phase 3; then
  echo "   3. app A with app B's slow receiver: $N devices each, in parallel" >&2
  curl -fsS -X POST http://127.0.0.1:9000/reset
  loadgen cbb "b${run}u" "$N" >"$OUT/cb-slow-b-lg-$run.json" 2>"$OUT/cb-slow-b-lg-$run.log" &
  b=$!
  loadgen cba "s${run}u" "$N" --rate "$A_RATE" >"$OUT/cb-slow-lg-$run.json" 2>"$OUT/cb-slow-lg-$run.log"
  wait "$b" || echo "   app B's loadgen exited with $?" >&2
  settle 9000 cba "s${run}u" "cb-slow-$run"
  python3 -c "import json,sys; d=json.loads(sys.argv[1]); d['expected']=int(sys.argv[2]); print(json.dumps(d))" \
    "$(sink_stats 9001)" "$(events cbb "b${run}u")" >"$OUT/cb-slow-b-$run.json"
  fi

  if phase 4; then
  # App B's slow backlog would load both halves alike; drop it so that they measure app A alone.
  psql "$DATABASE_URL" -qc "UPDATE apps SET callback_url = NULL WHERE app_id = 'cbb'" >/dev/null
  bench_stop sink-slow
  echo "   4a. app A alone, paced: $ISO_RATE logins/s for ${ISO_S}s" >&2
  curl -fsS -X POST http://127.0.0.1:9000/reset
  loadgen cba "i${run}u" "$ISO_N" --rate "$ISO_RATE" >"$OUT/cb-iso-alone-lg-$run.json" 2>"$OUT/cb-iso-alone-lg-$run.log"
  settle 9000 cba "i${run}u" "cb-iso-alone-$run"

  echo "   4b. the same while app C's receiver is dead for ${B_DOWN_S}s under the same load" >&2
  curl -fsS -X POST http://127.0.0.1:9000/reset
  loadgen cbc "c${run}u" "$ISO_N" --rate "$ISO_RATE" >"$OUT/cb-iso-c-lg-$run.json" 2>"$OUT/cb-iso-c-lg-$run.log" &
  c=$!
  loadgen cba "j${run}u" "$ISO_N" --rate "$ISO_RATE" >"$OUT/cb-iso-dead-lg-$run.json" 2>"$OUT/cb-iso-dead-lg-$run.log" &
  a=$!
  rss_kib=0
  for _ in $(seq 1 "$B_DOWN_S"); do
    sleep 1; r=$(bench_rss_kib notifier); ((r > rss_kib)) && rss_kib=$r
  done
  t0_ms=$(($(date +%s%N) / 1000000))
  bench_start sink-dead "$BIN/callback-sink" --addr 127.0.0.1:9002
  bench_wait_http http://127.0.0.1:9002/stats sink-dead
  wait "$a" || echo "   app A's loadgen exited with $?" >&2
  wait "$c" || echo "   app C's loadgen exited with $?" >&2
  settle 9000 cba "j${run}u" "cb-iso-dead-$run"
  settle 9002 cbc "c${run}u" "cb-iso-c-$run"
  python3 -c "import json,sys; d=json.load(open(sys.argv[1])); d['t0_ms']=int(sys.argv[2]); d['rss_kib']=int(sys.argv[3]); print(json.dumps(d))" \
    "$OUT/cb-iso-c-$run.json" "$t0_ms" "$rss_kib" >"$OUT/cb-iso-c-$run.json.tmp" && mv "$OUT/cb-iso-c-$run.json.tmp" "$OUT/cb-iso-c-$run.json"
  fi

  bench_stop notifier; bench_stop sink; bench_stop gateway; bench_stop registry
done

med() { for run in $(seq 1 "$RUNS"); do if [[ -f $OUT/cb-$1-$run.json ]]; then jqv "$OUT/cb-$1-$run.json" "$2"; fi; done | median; }
rate='round(d["unique"] / max((d["last_ms"] - d["first_ms"]) / 1000, 0.001), 1)'
lost='max(d["expected"] - d["unique"], 0)'
alone=$(med alone "$rate"); slow=$(med slow "$rate"); drain=$(med drain "$rate")
drain_s=$(for run in $(seq 1 "$RUNS"); do if [[ -f $OUT/cb-drain-t0-$run.txt ]]; then
  jqv "$OUT/cb-drain-$run.json" "round((d['last_ms'] - $(cat "$OUT/cb-drain-t0-$run.txt")) / 1000, 2)"; fi; done | median)
drain_total=$(for run in $(seq 1 "$RUNS"); do if [[ -f $OUT/cb-drain-t0-$run.txt ]]; then
  jqv "$OUT/cb-drain-$run.json" "round(d['expected'] / max((d['last_ms'] - $(cat "$OUT/cb-drain-t0-$run.txt")) / 1000, 0.001), 1)"; fi; done | median)
ratio() { python3 -c "print(f'{$1 / $2:.2f}' if $2 else '-')"; }
login_rate() { med "$1" 'round(d["rate_per_s"], 1)'; }
cat <<TABLE

Callbacks: medians of $RUNS runs, $GATEWAYS gateways, notifier with NOTIFIER_CONCURRENCY_PER_APP=$CONCURRENCY and NOTIFIER_REQUEST_TIMEOUT_MS=$REQUEST_TIMEOUT_MS, everything on this machine ($(nproc) cores)
| phase | app A events | deliveries/s to the fast sink (first to last) | vs alone | app A logins/s | lost | duplicates | app B (slow: ${SLOW_DELAY_MS} ms, ${SLOW_FAIL_PCT}% 500) delivered / events |
|---|---|---|---|---|---|---|---|
| 1. app A alone | $(med alone 'd["expected"]') | $alone | 1.00 | $(login_rate alone-lg) | $(med alone "$lost") | $(med alone 'd["duplicates"]') | - |
| 2. backlog drain (sink down, restarted) | $(med drain 'd["expected"]') | $drain | $(ratio "$drain" "$alone") | - | $(med drain "$lost") | $(med drain 'd["duplicates"]') | - |
| 3. app A + slow app B | $(med slow 'd["expected"]') | $slow | $(ratio "$slow" "$alone") | $(login_rate slow-lg) | $(med slow "$lost") | $(med slow 'd["duplicates"]') | $(med slow-b 'd["unique"]') / $(med slow-b 'd["expected"]') (failed $(med slow-b 'd["failed"]'), duplicates $(med slow-b 'd["duplicates"]')) |

Backlog drain: all $(med drain 'd["expected"]') events delivered ${drain_s}s after the sink came back ($drain_total events/s, including retry backoff; the sink was down ${DOWN_S}s after the last event).
Targets: >= 5000 deliveries/s to the fast receiver, slowed < 10% by the slow one (ratio >= 0.90), zero lost.
TABLE
login_rate='round(d["logins"] / max((d["login_last_ms"] - d["login_first_ms"]) / 1000, 0.001), 1)'
iso_alone=$(med iso-alone "$login_rate"); iso_dead=$(med iso-dead "$login_rate")
p99_alone=$(med iso-alone 'd["login_p99_ms"]'); p99_dead=$(med iso-dead 'd["login_p99_ms"]')
cat <<TABLE

Isolation (phase 4): app A at $ISO_RATE logins/s for ${ISO_S}s ($ISO_N devices), medians of $RUNS runs
| phase | app A login callbacks/s (first to last) | vs alone | p50 ms | p99 ms | p99 vs alone | lost | duplicates |
|---|---|---|---|---|---|---|---|
| 4a. app A alone | $iso_alone | 1.00 | $(med iso-alone 'd["login_p50_ms"]') | $p99_alone | 1.00 | $(med iso-alone "$lost") | $(med iso-alone 'd["duplicates"]') |
| 4b. app A, app C's receiver dead ${B_DOWN_S}s under the same load | $iso_dead | $(ratio "$iso_dead" "$iso_alone") | $(med iso-dead 'd["login_p50_ms"]') | $p99_dead | $(ratio "$p99_dead" "$p99_alone") | $(med iso-dead "$lost") | $(med iso-dead 'd["duplicates"]') |

App C after its receiver came back: $(med iso-c 'd["unique"]') / $(med iso-c 'd["expected"]') delivered, the last $(med iso-c 'round((d["last_ms"] - d["t0_ms"]) / 1000, 2)')s after it started, $(med iso-c "$rate") deliveries/s first to last, duplicates $(med iso-c 'd["duplicates"]'); notifier peak RSS while it was dead: $(med iso-c 'd["rss_kib"]') KiB.
Targets: app A's rate and p99 within 10% of alone (rate ratio >= 0.90, p99 ratio <= 1.10); backlog drain >= 0.8x the live rate (phase 2 vs 1).
TABLE
