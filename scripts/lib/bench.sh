# Sourced by scripts/bench-*.sh: build release binaries, run services on loopback, clean up.
# Every process started here is killed on exit; every load run is bounded in time.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT=$(pwd)
source scripts/lib/postgres.sh

# BIN overrides where the binaries come from (e.g. an older build, to compare in one run).
BIN="${BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release}"
OUT="$ROOT/target/bench"; mkdir -p "$OUT"
BENCH_PIDS=()

bench_cleanup() {
  for pid in "${BENCH_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  sleep 0.5
  for pid in "${BENCH_PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
}
trap bench_cleanup EXIT INT TERM

# SKIP_BUILD=1: use the binaries already in $BIN.
bench_build() {
  [[ ${SKIP_BUILD:-0} == 1 ]] && return 0
  echo "== building release binaries" >&2
  cargo build --release --quiet -p presence-common -p presence-client -p presence-registry -p connection-gateway -p notifier -p rest-facade -p presence-bench
}

# bench_start NAME CMD...: runs CMD in the background, logs to target/bench/NAME.log.
bench_start() {
  local name=$1; shift
  "$@" >"$OUT/$name.log" 2>&1 &
  BENCH_PIDS+=($!)
  echo $! >"$OUT/$name.pid"
}

bench_wait_http() { # URL NAME
  for _ in $(seq 1 150); do curl -fsS "$1" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "$2 did not come up; see $OUT/$2.log" >&2; tail -n 20 "$OUT/$2.log" >&2; return 1
}

# A fresh database for the run.
bench_database() {
  export DATABASE_URL="${DATABASE_URL%/*}/presence_bench"
  ensure_postgres
  psql "$(pg_server_url)" -qc "DROP DATABASE IF EXISTS presence_bench WITH (FORCE)" >/dev/null
  psql "$(pg_server_url)" -qc "CREATE DATABASE presence_bench" >/dev/null
  "$BIN/presence-migrate" >"$OUT/migrate.log" 2>&1 || { cat "$OUT/migrate.log" >&2; return 1; }
}

# Internal calls are authenticated, as in production: a secret for the run, a token per caller.
BENCH_INTERNAL_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
bench_token() { # ROLE ID
  REGISTRY_INTERNAL_SECRET="$BENCH_INTERNAL_SECRET" "$BIN/presence-cli" internal-token --role "$1" --id "$2"
}

# bench_registry: registry on 127.0.0.1:7200 (metrics 9200); then the app `bench`.
bench_registry() {
  bench_start registry env RUST_LOG=warn REGISTRY_INTERNAL_SECRET="$BENCH_INTERNAL_SECRET" REGISTRY_LISTEN_ADDR=127.0.0.1:7200 \
    REGISTRY_METRICS_ADDR=127.0.0.1:9200 "$BIN/presence-registry"
  bench_wait_http http://127.0.0.1:9200/healthz registry
  psql "$DATABASE_URL" -qc "INSERT INTO apps (app_id, token_secret, api_key_sha256, callback_url, callback_secret)
    VALUES ('bench', 'bench-secret', encode(sha256('bench-key'::bytea), 'hex'), 'http://127.0.0.1:9000/cb', 'cb')
    ON CONFLICT (app_id) DO NOTHING" >/dev/null
}

# bench_registries N [extra env...]: N registry processes, registry-I on 127.0.0.1:720(I-1)
# (metrics 92(I-1)0), sharing the partitions; then the app `bench`. Waits until every partition
# has an owner (an older build, without partitions, just answers healthy).
bench_registries() {
  local n=$1; shift
  for i in $(seq 1 "$n"); do
    bench_start "registry$i" env RUST_LOG=warn REGISTRY_INTERNAL_SECRET="$BENCH_INTERNAL_SECRET" REGISTRY_ID="registry-$i" \
      REGISTRY_LISTEN_ADDR="127.0.0.1:$((7199 + i))" REGISTRY_METRICS_ADDR="127.0.0.1:$((9190 + 10 * i))" "$@" "$BIN/presence-registry"
    bench_wait_http "http://127.0.0.1:$((9190 + 10 * i))/healthz" "registry$i"
  done
  bench_app bench bench-secret http://127.0.0.1:9000/cb cb
  bench_wait_owned "$n"
}

# bench_owned: partitions owned by a live registry (0 on a build without partitions).
bench_owned() {
  psql "$DATABASE_URL" -qtAc "SELECT count(*) FROM registry_partitions t JOIN presence_members m
    ON m.member = t.owner AND m.alive_until > now() ${1:+WHERE m.member NOT LIKE '$1-%'}" 2>/dev/null || echo 0
}

# bench_wait_owned N: waits (30 s at most) until N registries own every partition between them.
bench_wait_owned() {
  local p members
  p=$(psql "$DATABASE_URL" -qtAc "SELECT count(*) FROM registry_partitions" 2>/dev/null || echo 0)
  [[ $p == 0 ]] && return 0
  for _ in $(seq 1 300); do
    members=$(psql "$DATABASE_URL" -qtAc "SELECT count(DISTINCT owner) FROM registry_partitions t JOIN presence_members m
      ON m.member = t.owner AND m.alive_until > now()")
    [[ $(bench_owned) == "$p" && $members == "$1" ]] && return 0
    sleep 0.1
  done
  echo "partitions not shared by $1 registries after 30 s" >&2; return 1
}

# bench_gateways N [extra env...]: N gateway processes sharing 127.0.0.1:7100 (SO_REUSEPORT).
bench_gateways() {
  local n=$1; shift
  for i in $(seq 1 "$n"); do
    bench_start "gateway$i" env RUST_LOG=warn GATEWAY_ID="bench-gw-$i" INTERNAL_TOKEN="$(bench_token gateway "bench-gw-$i")" \
      GATEWAY_LISTEN_ADDR=127.0.0.1:7100 GATEWAY_WS_LISTEN_ADDR=127.0.0.1:7101 \
      GATEWAY_METRICS_ADDR="127.0.0.1:$((9100 + i))" "$@" "$BIN/connection-gateway"
    bench_wait_http "http://127.0.0.1:$((9100 + i))/healthz" "gateway$i"
  done
}

# RSS in KiB of the processes started as NAME*.
bench_rss_kib() {
  local total=0 pidfile
  for pidfile in "$OUT/$1"*.pid; do
    total=$((total + $(awk '/^VmRSS/ {print $2}' "/proc/$(cat "$pidfile")/status" 2>/dev/null || echo 0)))
  done
  echo "$total"
}

# CPU seconds (user+sys) used so far by the processes started as NAME*.
bench_cpu_s() {
  local ticks=0 pidfile hz
  hz=$(getconf CLK_TCK)
  for pidfile in "$OUT/$1"*.pid; do
    ticks=$((ticks + $(awk '{print $14 + $15}' "/proc/$(cat "$pidfile")/stat" 2>/dev/null || echo 0)))
  done
  echo "scale=2; $ticks / $hz" | bc
}

# median of the numbers on stdin
# bench_runq_us NAME: microseconds the threads of NAME's processes (all $OUT/NAME*.pid) have
# spent runnable but waiting for a core, from /proc/PID/task/*/schedstat (its second field).
bench_runq_us() {
  local pidfile
  for pidfile in "$OUT/$1"*.pid; do cat "/proc/$(cat "$pidfile")"/task/*/schedstat 2>/dev/null || true; done \
    | awk '{ns += $2} END {printf "%d", ns / 1000}'
}

median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) print 0; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

# jqv FILE EXPR: a value from a loadgen JSON summary (python, as jq may be missing).
jqv() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {}, {'d': d}))" "$1" "$2"; }

# bench_stop NAME: stops the processes started as NAME* (TERM, then KILL after 3 s) and forgets them.
bench_stop() {
  local pidfile pid pids=() keep=() p
  for pidfile in "$OUT/$1"*.pid; do
    [[ -f $pidfile ]] || continue
    pid=$(cat "$pidfile"); pids+=("$pid"); rm -f "$pidfile"
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  for p in "${BENCH_PIDS[@]}"; do [[ " ${pids[*]} " == *" $p "* ]] || keep+=("$p"); done
  BENCH_PIDS=("${keep[@]}")
}

# bench_ports_free PORT...: fails (naming the port) if something already listens on a port we need.
bench_ports_free() {
  local port
  for port in "$@"; do
    if ss -Htln "sport = :$port" | grep -q .; then
      echo "port $port is in use (another benchmark or dev.sh running?); stop it first" >&2; return 1
    fi
  done
}

# bench_established PORT: established connections whose local port is PORT (the server side).
bench_established() { ss -Htn state established "sport = :$1" | wc -l; }

# bench_wait_closed PORT SECONDS: waits (at most SECONDS) until PORT holds no connection.
bench_wait_closed() {
  for _ in $(seq 1 "$2"); do (($(bench_established "$1") == 0)) && return 0; sleep 1; done
}

# bench_wait_established PORT N SECONDS: waits until PORT holds N connections; prints the count.
bench_wait_established() {
  local got=0 last=-1 still=0 deadline=$((SECONDS + $3))
  while ((SECONDS < deadline)); do
    got=$(bench_established "$1"); ((got >= $2)) && break
    # Connecting has stopped short (the loadgen counts the failures): do not wait out the bound.
    if ((got > 0 && got == last)); then ((++still >= 15)) && break; else still=0; fi
    last=$got; sleep 1
  done
  echo "$got"
}

# bench_app APP TOKEN_SECRET CALLBACK_URL CALLBACK_SECRET: an app row (REST key "<APP>-key").
bench_app() {
  psql "$DATABASE_URL" -qc "INSERT INTO apps (app_id, token_secret, api_key_sha256, callback_url, callback_secret)
    VALUES ('$1', '$2', encode(sha256('$1-key'::bytea), 'hex'), '$3', '$4')
    ON CONFLICT (app_id) DO UPDATE SET token_secret = EXCLUDED.token_secret,
      callback_url = EXCLUDED.callback_url, callback_secret = EXCLUDED.callback_secret" >/dev/null
}

# bench_events APP: the app's events in Postgres.
bench_events() { psql "$DATABASE_URL" -qtAc "SELECT count(*) FROM presence_events WHERE app_id = '$1'"; }
# bench_sink_unique PORT: the unique events the callback-sink on 127.0.0.1:PORT received.
bench_sink_unique() { curl -fsS "http://127.0.0.1:$1/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["unique"])'; }

# bench_sink PORT [ARGS...]: a callback-sink on 127.0.0.1:PORT (9000: where the app `bench` calls back).
bench_sink() {
  local port=$1; shift
  bench_start sink "$BIN/callback-sink" --addr "127.0.0.1:$port" "$@"
  bench_wait_http "http://127.0.0.1:$port/stats" sink
}

# bench_system GATEWAYS: release binaries, a fresh database, the registry, GATEWAYS gateways, the
# callback sink (127.0.0.1:9000) and the notifier: what a login benchmark runs against.
bench_system() {
  bench_build
  bench_database
  bench_registry
  bench_gateways "$1"
  bench_sink 9000
  bench_notifier
}

# bench_notifier [extra env...]: the notifier (metrics 127.0.0.1:9300), if this build has one.
bench_notifier() {
  [[ -x "$BIN/notifier" ]] || return 0
  bench_start notifier env RUST_LOG=warn NOTIFIER_METRICS_ADDR=127.0.0.1:9300 "$@" "$BIN/notifier"
  bench_wait_http http://127.0.0.1:9300/healthz notifier
}

# bench_facade: the REST facade on 127.0.0.1:8080 (metrics 9400).
bench_facade() {
  bench_start facade env RUST_LOG=warn INTERNAL_TOKEN="$(bench_token facade bench-facade)" FACADE_LISTEN_ADDR=127.0.0.1:8080 \
    FACADE_METRICS_ADDR=127.0.0.1:9400 "$BIN/rest-facade"
  bench_wait_http http://127.0.0.1:8080/healthz facade
}

# bench_callbacks_done T0 [APP [PORT]]: seconds from T0 (`date +%s%N`) until the sink on PORT (9000)
# holds every event committed for APP (bench); "timeout(<got>/<expected>)" after 120 s.
bench_callbacks_done() {
  local t0=$1 app=${2:-bench} port=${3:-9000} expected got
  expected=$(bench_events "$app")
  for _ in $(seq 1 600); do
    got=$(bench_sink_unique "$port")
    [[ $got -ge $expected ]] && { echo "scale=2; ($(date +%s%N) - $t0) / 1000000000" | bc; return; }
    sleep 0.2
  done
  echo "timeout($got/$expected)"
}

# bench_mosquitto PORT: a private Mosquitto on 127.0.0.1:PORT (no persistence, errors-only log),
# started as `mosquitto` so bench_rss_kib/bench_cpu_s measure it alone.
bench_mosquitto() {
  printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\nlog_type error\nmax_connections -1\n' \
    "$1" >"$OUT/mosquitto-$1.conf"
  bench_start mosquitto mosquitto -c "$OUT/mosquitto-$1.conf"
  for _ in $(seq 1 50); do ss -Htln "sport = :$1" | grep -q . && return 0; sleep 0.1; done
  echo "mosquitto did not come up; see $OUT/mosquitto.log" >&2; tail -n 20 "$OUT/mosquitto.log" >&2; return 1
}

# pct CPU_SECONDS WINDOW_SECONDS: percent of one core.
pct() { printf '%.2f' "$(echo "scale=4; 100 * $1 / $2" | bc)"; }

# Other work on the machine (another build or test suite on the same cores) changes every
# figure. These tell a quiet run from a disturbed one.
# bench_cpu_mark VAR [PID...]: stores in VAR a mark: "<unix s> <busy ticks of the machine> <ticks
# of our own processes> <ticks of this shell's waited-for children> <steal ticks>". Own = the load generators
# this shell waited for (`times`), the services it started, Mosquitto, Postgres backends of the
# bench database, and PIDs with all their descendants (a load generator still running in the
# background). Busy = user + nice + system of all cores (/proc/stat). Call it directly, not in
# $(...): `times` must run in this shell. A busy loop on one of 2 cores reads as ~50 % other work.
bench_cpu_mark() {
  local var=$1 hz children own=0 pid stat extra=() queue; shift
  queue=("$@")
  while ((${#queue[@]})); do
    extra+=("${queue[0]}"); queue=("${queue[@]:1}" $(pgrep -P "${queue[0]}" || true))
  done
  hz=$(getconf CLK_TCK)
  times >"$OUT/.times"
  children=$(tail -n 1 "$OUT/.times" | awk -v hz="$hz" '{
    s = 0; for (i = 1; i <= 2; i++) { split($i, p, "m"); sub("s", "", p[2]); s += p[1] * 60 + p[2] } printf "%d", s * hz }')
  for pid in "${BENCH_PIDS[@]}" "${extra[@]}" $(pgrep -x mosquitto) $(pgrep -f "postgres: .*presence_bench" || true); do
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
    own=$((own + $(echo "${stat##*) }" | awk '{print $12 + $13 + $14 + $15}')))
  done
  printf -v "$var" '%s %s %s %s %s' "$(date +%s.%N)" "$(awk '/^cpu / {print $2 + $3 + $4}' /proc/stat)" "$((own + children))" \
    "$children" "$(awk '/^cpu / {print $9}' /proc/stat)"
}

# bench_other_pct MARK0 MARK1: other work's CPU between two marks, in percent of the machine.
bench_other_pct() {
  python3 -c "import sys
t0, b0, o0 = map(float, sys.argv[1].split()[:3]); t1, b1, o1 = map(float, sys.argv[2].split()[:3])
print(f'{max(0.0, 100 * ((b1 - b0) - (o1 - o0)) / float(sys.argv[3]) / max(t1 - t0, 1e-9) / float(sys.argv[4])):.1f}')" \
    "$1" "$2" "$(getconf CLK_TCK)" "$(nproc)"
}

# bench_steal_pct MARK0 MARK1: CPU the hypervisor gave to others (steal) between two marks, in
# percent of the machine. "Other work" does not see it, and it slows everything here alike.
bench_steal_pct() {
  python3 -c "import sys
a, b = sys.argv[1].split(), sys.argv[2].split()
print(f'{100 * (float(b[4]) - float(a[4])) / float(sys.argv[3]) / max(float(b[0]) - float(a[0]), 1e-9) / float(sys.argv[4]):.1f}')" \
    "$1" "$2" "$(getconf CLK_TCK)" "$(nproc)"
}

# bench_children_s MARK0 MARK1: CPU seconds of the foreground children (a load generator run to
# its end) between two marks.
bench_children_s() {
  python3 -c "import sys; print(f'{(float(sys.argv[2].split()[3]) - float(sys.argv[1].split()[3])) / float(sys.argv[3]):.2f}')" \
    "$1" "$2" "$(getconf CLK_TCK)"
}

# bench_wait_quiet: with QUIET_WAIT_S > 0, waits (at most that long) until the whole machine is
# less than QUIET_PCT (20) percent busy over 2 s; says how busy it was when it went on.
bench_wait_quiet() {
  local waited=0 a b pct
  ((${QUIET_WAIT_S:-0} > 0)) || return 0
  while :; do
    a=$(awk '/^cpu / {print $2 + $3 + $4, $2 + $3 + $4 + $5 + $6}' /proc/stat); sleep 2; waited=$((waited + 2))
    b=$(awk '/^cpu / {print $2 + $3 + $4, $2 + $3 + $4 + $5 + $6}' /proc/stat)
    pct=$(python3 -c "import sys; a = list(map(int, sys.argv[1].split())); b = list(map(int, sys.argv[2].split()))
print(round(100 * (b[0] - a[0]) / max(b[1] - a[1], 1)))" "$a" "$b")
    if ((pct < ${QUIET_PCT:-20})) || ((waited >= QUIET_WAIT_S)); then
      echo "   machine ${pct}% busy after ${waited}s of waiting for quiet" >&2; return 0
    fi
  done
}
