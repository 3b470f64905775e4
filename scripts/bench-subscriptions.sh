#!/usr/bin/env bash
# Benchmark 8, subscriptions and WebSocket devices (docs/benchmarks.md). Loopback only, bounded
# in time; every phase starts from a fresh database, registry and gateways.
#   idle:   IDLE_N devices log in over TCP and are held idle, then IDLE_N others over WebSocket,
#           each on fresh gateways; user-space RSS of the gateways per device, WebSocket/TCP.
#           (A smaller stand-in for bench-idle.sh's 100k, with its baseline in the same run.)
#   online: N devices (TRANSPORT) log in, then each subscribes to PER_DEVICE of the other N
#           users (all online); then CHANGES of those users set a custom status, SetStatus from
#           their own device, paced at RATE/s.
#   unseen: N devices subscribe to PER_DEVICE of WATCHED users nobody has logged in as (the
#           registry keeps an empty entry per watched user); then CHANGES of them log in for the
#           first time, paced at UNSEEN_RATE/s.
#   For online and unseen: StatusChanged deliveries expected vs received at every subscriber,
#   deliveries/s, latency from the actor's send (SetStatus) and from changed_at_ms; RSS of the
#   registry and the gateways after the logins and after subscribing, per subscription and per
#   distinct (user, gateway) interest. Interests are counted exactly: each device's subscriptions
#   joined with the gateway process that holds its socket (ss -p).
# Env: N (20000), PER_DEVICE (50), CHANGES (5000), RATE (200), WATCHED (100000), UNSEEN_RATE
#   (1000), TRANSPORT (ws), GATEWAYS (2), IDLE_N (20000), SETTLE_S (10: after a phase's last
#   connect or subscribe, before RSS is read; the gateways trim freed memory every 10 s), DRAIN_S
#   (10), RUNS (3), PHASES ("idle online unseen"), GATEWAY_WORKER_THREADS (unset: one per core),
#   QUIET_WAIT_S (0: off; else wait up to that long before each wave until the machine is less
#   than QUIET_PCT, 20, percent busy).
source "$(dirname "$0")/lib/bench.sh"
N=${N:-20000}; PER_DEVICE=${PER_DEVICE:-50}; CHANGES=${CHANGES:-5000}; RATE=${RATE:-200}
WATCHED=${WATCHED:-100000}; UNSEEN_RATE=${UNSEEN_RATE:-1000}; TRANSPORT=${TRANSPORT:-ws}
GATEWAYS=${GATEWAYS:-2}; IDLE_N=${IDLE_N:-20000}; SETTLE_S=${SETTLE_S:-10}; DRAIN_S=${DRAIN_S:-10}
RUNS=${RUNS:-3}; PHASES=${PHASES:-idle online unseen}
LG="$BIN/presence-loadgen"; SB="$BIN/subscribe-bench"
PORT_tcp=7100; PORT_ws=7101

ulimit -n "$(ulimit -Hn)"
per_gateway=$(($(ulimit -Hn) - 256))
if ((GATEWAYS * per_gateway < (N + CHANGES) * 5 / 4 || GATEWAYS * per_gateway < IDLE_N * 5 / 4)); then
  echo "GATEWAYS=$GATEWAYS x $per_gateway connections cannot hold N=$N (+ $CHANGES actors) or IDLE_N=$IDLE_N" >&2; exit 1
fi
bench_ports_free 7100 7101 7200 9200 $(seq 9101 $((9100 + GATEWAYS)))
bench_build

gateways() {
  bench_gateways "$GATEWAYS" ${GATEWAY_WORKER_THREADS:+GATEWAY_WORKER_THREADS="$GATEWAY_WORKER_THREADS"}
}

# Sum of a counter (with its labels as given, e.g. 'name{a="b"}') over the metrics of PORTS.
counter() {
  local name=$1 port total=0 v; shift
  for port in "$@"; do
    v=$(curl -fsS "http://127.0.0.1:$port/metrics" | awk -v n="$name" 'index($0, n) == 1 {print $NF}' | head -n 1)
    total=$(python3 -c "print(int($total + float('${v:-0}')))")
  done
  echo "$total"
}
gateway_metric_ports() { seq 9101 $((9100 + GATEWAYS)); }

# wait_files DIR PREFIX COUNT SECONDS: until COUNT files DIR/PREFIX* exist.
wait_files() {
  local deadline=$((SECONDS + $4))
  while ((SECONDS < deadline)); do
    (($(find "$1" -maxdepth 1 -name "$2*" | wc -l) >= $3)) && return 0
    sleep 0.2
  done
  echo "   timed out waiting for $3 $2* files in $1" >&2; return 1
}

# idle_hold LABEL TRANSPORT: IDLE_N devices held idle on fresh gateways; "<label>.rss" is
# "<gateways before> <gateways held> <held>" (KiB, KiB, connections).
idle_hold() {
  local label=$1 transport=$2 port stop="$OUT/$1.stop" base got lg
  port=$(eval echo "\$PORT_$transport")
  gateways; sleep 2
  base=$(bench_rss_kib gateway)
  rm -f "$stop"
  timeout 400 "$LG" --mode presence --app bench --secret bench-secret --transport "$transport" --target "127.0.0.1:$port" \
    --devices "$IDLE_N" --hold-s 300 --stop-file "$stop" --timeout-s 330 --user-prefix "$label-" \
    >"$OUT/$label.json" 2>"$OUT/$label.log" &
  lg=$!
  got=$(bench_wait_established "$port" "$IDLE_N" 120)
  ((got >= IDLE_N)) || echo "   $label: only $got of $IDLE_N connected" >&2
  sleep "$SETTLE_S"
  echo "$base $(bench_rss_kib gateway) $(bench_established "$port")" >"$OUT/$label.rss"
  touch "$stop"
  wait "$lg" || echo "   $label: loadgen exited with $? (see $OUT/$label.log)" >&2
  bench_stop gateway
  echo "   $label: $(cat "$OUT/$label.rss") (KiB before, KiB held, connections)" >&2
}

# subs_phase LABEL WATCH RATE: one subscription run; figures in "<label>.figures.json".
subs_phase() {
  local label=$1 watch=$2 rate=$3 port sync="$OUT/$1.sync" conns processes lg before logged subscribed
  local pushes0 pushes1 delivered0 delivered1 cpu0 cpu1 t0 t1 m0 m1
  port=$(eval echo "\$PORT_$TRANSPORT")
  conns=$N; [[ $watch == unseen ]] && conns=$((N + CHANGES))
  processes=$(((conns + 14999) / 15000))
  bench_database; bench_registry; gateways; sleep 2
  before="$(bench_rss_kib gateway) $(bench_rss_kib registry)"
  rm -rf "$sync"; mkdir -p "$sync"
  timeout 600 "$SB" --watch "$watch" --transport "$TRANSPORT" --target "127.0.0.1:$port" --devices "$N" \
    --per-device "$PER_DEVICE" --watched "$WATCHED" --changes "$CHANGES" --rate "$rate" --drain-s "$DRAIN_S" \
    --processes "$processes" --prefix "$label-" --sync-dir "$sync" --dump-subscriptions --timeout-s 500 \
    >"$OUT/$label.json" 2>"$OUT/$label.log" &
  lg=$!
  wait_files "$sync" logged-in. "$processes" 200 || true
  sleep "$SETTLE_S"
  logged="$(bench_rss_kib gateway) $(bench_rss_kib registry)"
  # Which gateway process holds each device's socket, while all are connected.
  ss -tnpH state established "( sport = :$port )" >"$sync/ss.txt"
  touch "$sync/subscribe"
  wait_files "$sync" subscribed. "$processes" 200 || true
  sleep "$SETTLE_S"
  subscribed="$(bench_rss_kib gateway) $(bench_rss_kib registry)"
  pushes0=$(counter 'registry_status_pushes_total{delivered="yes"}' 9200)
  delivered0=$(counter gateway_status_changes_delivered_total $(gateway_metric_ports))
  bench_wait_quiet
  cpu0=$(echo "$(bench_cpu_s gateway) + $(bench_cpu_s registry)" | bc); t0=$(date +%s.%N); bench_cpu_mark m0 "$lg"
  touch "$sync/wave"
  # Counters once every shard has counted, before any device leaves (leaving is pushed too).
  wait_files "$sync" done. "$processes" $((CHANGES / ${rate%.*} + 3 * DRAIN_S + 60)) || true
  cpu1=$(echo "$(bench_cpu_s gateway) + $(bench_cpu_s registry)" | bc); t1=$(date +%s.%N); bench_cpu_mark m1 "$lg"
  pushes1=$(counter 'registry_status_pushes_total{delivered="yes"}' 9200)
  delivered1=$(counter gateway_status_changes_delivered_total $(gateway_metric_ports))
  touch "$sync/end"
  wait "$lg" || echo "   $label: subscribe-bench exited with $? (see $OUT/$label.log)" >&2
  bench_stop gateway; bench_stop registry
  python3 - "$sync" "$OUT/$label.json" "$before" "$logged" "$subscribed" "$((pushes1 - pushes0))" \
    "$((delivered1 - delivered0))" "$(echo "$cpu1 - $cpu0" | bc)" "$(echo "$t1 - $t0" | bc)" "$(bench_other_pct "$m0" "$m1")" \
    >"$OUT/$label.figures.json" <<'PY'
import glob, json, re, sys
sync, summary_file, before, logged, subscribed, pushes, handed, cpu, wall, other = sys.argv[1:11]
summary = json.load(open(summary_file))
gw0, reg0 = map(int, before.split()); gw1, reg1 = map(int, logged.split()); gw2, reg2 = map(int, subscribed.split())
# Gateway side of each device socket: ss prints "local peer users:((...,pid=P,...))" per socket.
owner = {}
for line in open(f"{sync}/ss.txt"):
    m = re.search(r"\s(\S+):(\d+)\s+(\S+):(\d+)\s.*pid=(\d+)", " " + line)
    if m:
        owner[f"{m.group(3)}:{m.group(4)}"] = m.group(5)
interests, users, subs, unmapped = set(), set(), 0, 0
for path in glob.glob(f"{sync}/subs.*"):
    for line in open(path):
        parts = line.split()
        if not parts:
            continue
        gw = owner.get(parts[0])
        if gw is None:
            unmapped += 1
            continue
        for u in parts[1:]:
            interests.add((u, gw)); users.add(u); subs += 1
n_sub = max(summary["subscriptions"], 1)
print(json.dumps({
    "summary": summary,
    "subscriptions": summary["subscriptions"], "mapped_subscriptions": subs, "unmapped_devices": unmapped,
    "watched_users": len(users), "interests": len(interests),
    "registry_pushes": int(pushes), "pushes_per_change": int(pushes) / max(summary["changes_ok"], 1),
    "gateway_handed": int(handed),
    # Gateways + registry, from the wave's start until every shard is done (drain included).
    "wave_cpu_pct": 100 * float(cpu) / max(float(wall), 1e-9), "wave_wall_s": float(wall),
    # Anything but this benchmark (another build or test suite), % of the machine in the wave.
    "other_work_pct": float(other),
    "gw_login_b_per_device": (gw1 - gw0) * 1024 / max(summary["logged_in"], 1),
    "gw_b_per_subscription": (gw2 - gw1) * 1024 / n_sub,
    "reg_b_per_subscription": (reg2 - reg1) * 1024 / n_sub,
    "reg_b_per_interest": (reg2 - reg1) * 1024 / max(len(interests), 1),
    "reg_b_per_watched_user": (reg2 - reg1) * 1024 / max(len(users), 1),
    "rss_kib": {"before": [gw0, reg0], "logged_in": [gw1, reg1], "subscribed": [gw2, reg2]},
}))
PY
  python3 -c "import json,sys; d=json.load(open(sys.argv[1])); s=d['summary']; print('   $label:', json.dumps({k: d[k] for k in d if k != 'summary'}))" \
    "$OUT/$label.figures.json" >&2
  grep -v '^{' "$OUT/$label.log" | tail -n 1 >&2 || true
}

for run in $(seq 1 "$RUNS"); do
  for phase in $PHASES; do
    echo "== run $run/$RUNS: $phase" >&2
    case $phase in
      idle)
        bench_database; bench_registry
        idle_hold "subs-idle-tcp-$run" tcp
        idle_hold "subs-idle-ws-$run" ws
        bench_stop registry ;;
      online) subs_phase "subs-online-$run" online "$RATE" ;;
      unseen) subs_phase "subs-unseen-$run" unseen "$UNSEEN_RATE" ;;
      *) echo "unknown phase $phase" >&2; exit 1 ;;
    esac
  done
done

# med PHASE EXPR: median over runs of EXPR over d (the figures of <phase>-<run>).
med() {
  for run in $(seq 1 "$RUNS"); do jqv "$OUT/subs-$1-$run.figures.json" "$2"; done | median
}
f0() { printf '%.0f' "$1"; }
f1() { printf '%.1f' "$1"; }
# ms PHASE PERCENTILES-KEY: "p50 / p99" of a latency, "-" without samples.
ms() {
  [[ $(med "$1" "d['summary']['$2']['count']") == 0 ]] && { echo -; return; }
  echo "$(f1 "$(med "$1" "d['summary']['$2']['p50_ms']")") / $(f1 "$(med "$1" "d['summary']['$2']['p99_ms']")")"
}
echo
if [[ " $PHASES " == *" idle "* ]]; then
  idle_b() { # TRANSPORT: median gateway bytes per held device
    for run in $(seq 1 "$RUNS"); do
      read -r b h c <"$OUT/subs-idle-$1-$run.rss"; python3 -c "print(($h - $b) * 1024 / max($c, 1))"
    done | median
  }
  held() { for run in $(seq 1 "$RUNS"); do awk '{print $3}' "$OUT/subs-idle-$1-$run.rss"; done | median; }
  tcp_b=$(idle_b tcp); ws_b=$(idle_b ws)
  ratios=$(for run in $(seq 1 "$RUNS"); do
    read -r b h c <"$OUT/subs-idle-tcp-$run.rss"; read -r wb wh wc <"$OUT/subs-idle-ws-$run.rss"
    python3 -c "print((($wh - $wb) / max($wc, 1)) / max(($h - $b) / max($c, 1), 1e-9))"; done | median)
  errs=$(for run in $(seq 1 "$RUNS"); do for t in tcp ws; do jqv "$OUT/subs-idle-$t-$run.json" 'sum(d["errors"].values())' 2>/dev/null || echo 1; done; done | paste -sd+ | bc)
  cat <<TABLE
Idle devices, TCP vs WebSocket: medians of $RUNS runs, $GATEWAYS gateways${GATEWAY_WORKER_THREADS:+ of $GATEWAY_WORKER_THREADS thread(s)}, RSS ${SETTLE_S}s after the last connect ($(nproc) cores)
| transport | devices held | gateway RSS bytes per device | vs TCP (median of per-run ratios) |
|---|---|---|---|
| TCP | $(f0 "$(held tcp)") | $(f0 "$tcp_b") | 1.00 |
| WebSocket | $(f0 "$(held ws)") | $(f0 "$ws_b") | $(printf '%.2f' "$ratios") |
Loadgen errors over all runs: $errs. Target: a WebSocket device <= 2x a TCP one.

TABLE
fi
subs_rows() {
  local phase=$1 what=$2
  [[ " $PHASES " == *" $phase "* ]] || return 0
  echo "| $what | $(f0 "$(med "$phase" 'd["subscriptions"]')") | $(f0 "$(med "$phase" 'd["interests"]')") | $(f0 "$(med "$phase" 'd["summary"]["change_rate"]')") | $(f0 "$(med "$phase" 'd["summary"]["deliveries_per_s"]')") | $(f0 "$(med "$phase" 'd["summary"]["expected"]')") / $(f0 "$(med "$phase" 'd["summary"]["received"]')") / $(f0 "$(med "$phase" 'd["summary"]["lost"]')") | $(ms "$phase" from_send) | $(ms "$phase" from_changed) | $(ms "$phase" actor) | $(f0 "$(med "$phase" 'd["summary"]["duplicates"] + d["summary"]["unexpected"] + sum(d["summary"]["errors"].values())')") | $(f0 "$(med "$phase" 'd["wave_cpu_pct"]')") |"
}
mem_rows() {
  local phase=$1 what=$2
  [[ " $PHASES " == *" $phase "* ]] || return 0
  echo "| $what | $(f0 "$(med "$phase" 'd["interests"]')") | $(f1 "$(med "$phase" 'd["reg_b_per_interest"]')") | $(f1 "$(med "$phase" 'd["reg_b_per_watched_user"]')") | $(f1 "$(med "$phase" 'd["reg_b_per_subscription"]')") | $(f1 "$(med "$phase" 'd["gw_b_per_subscription"]')") | $(f0 "$(med "$phase" 'd["gw_login_b_per_device"]')") | $(printf '%.2f' "$(med "$phase" 'd["pushes_per_change"]')") |"
}
if [[ " $PHASES " == *" online "* || " $PHASES " == *" unseen "* ]]; then
  cat <<TABLE
Subscriptions: medians of $RUNS runs, $N devices over $TRANSPORT x $PER_DEVICE subscriptions, $CHANGES changes, $GATEWAYS gateways, 1 registry ($(nproc) cores)
| watched users | subscriptions | (user, gateway) interests | changes/s | deliveries/s | expected / received / lost | from send p50 / p99 ms | from changed_at p50 / p99 ms | change acked p50 / p99 ms | dup + unexpected + errors | gateways + registry CPU % of a core in the wave |
|---|---|---|---|---|---|---|---|---|---|---|
$(subs_rows online "$N online (the subscribers), SetStatus at $RATE/s")
$(subs_rows unseen "$WATCHED never seen, first logins at $UNSEEN_RATE/s")

Memory after subscribing (RSS deltas, ${SETTLE_S}s after the last SubscribeOk)
| watched users | interests | registry bytes per interest | registry bytes per watched user | registry bytes per subscription | gateway bytes per subscription | gateway bytes per logged-in device | registry pushes per change |
|---|---|---|---|---|---|---|---|
$(mem_rows online "$N online")
$(mem_rows unseen "$WATCHED never seen")
Targets: p99 <= 100 ms at 10k deliveries/s; <= 64 bytes of registry memory per (user, gateway) interest.
Other work on the machine during each wave, % of all cores (another build or test suite): $(for phase in online unseen; do
  [[ " $PHASES " == *" $phase "* ]] || continue
  echo -n "$phase: $(for run in $(seq 1 "$RUNS"); do jqv "$OUT/subs-$phase-$run.figures.json" 'd["other_work_pct"]'; done | paste -sd' ')  "; done)
TABLE
fi
