#!/usr/bin/env bash
# Memory per idle device against devices held (docs/benchmarks.md, section 2). Loopback only,
# bounded in time.
#   bench-idle.sh once per size in SIZES, memory only (CPU=0: no CPU window, no fast-heartbeat
#   phase), each from a fresh database, registry and gateways; Mosquitto holds min(N, PEER_MAX)
#   connections in the same run. Each size appends its medians to target/bench/idle-sweep.csv:
#   devices, held, gateways, gateway and registry RSS bytes per device, Mosquitto's connections
#   and RSS bytes per connection. Picture: scripts/plots.sh idle-sweep.
# Env: SIZES ("5000 10000 25000 50000 100000"), PEER_MAX (15000), RUNS (1, per size),
#   GATEWAY_WORKER_THREADS (1, as in section 2), SETTLE_S (10).
source "$(dirname "$0")/lib/bench.sh"
SIZES=${SIZES:-5000 10000 25000 50000 100000}; PEER_MAX=${PEER_MAX:-15000}
export RUNS=${RUNS:-1} GATEWAY_WORKER_THREADS=${GATEWAY_WORKER_THREADS:-1} SETTLE_S=${SETTLE_S:-10}
CSV="$OUT/idle-sweep.csv"

bench_build
rm -f "$CSV"
started=$SECONDS
for n in $SIZES; do
  echo "== $n devices, Mosquitto $((n < PEER_MAX ? n : PEER_MAX)) connections" >&2
  t0=$SECONDS
  N=$n PEER_N=$((n < PEER_MAX ? n : PEER_MAX)) CPU=0 CSV="$CSV" SKIP_BUILD=1 "$ROOT/scripts/bench-idle.sh" \
    >"$OUT/idle-sweep-$n.txt"
  echo "   $n devices: $((SECONDS - t0)) s; $(tail -n 1 "$CSV")" >&2
done

python3 - "$CSV" "$RUNS" "$GATEWAY_WORKER_THREADS" "$(nproc)" "$((SECONDS - started))" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
print(f"\nMemory per idle device against devices held: medians of {sys.argv[2]} run(s) per size, "
      f"{sys.argv[3]} worker thread(s) per gateway, {sys.argv[4]} cores; took {sys.argv[5]} s")
print("| devices held | gateways | gateway bytes per device | registry bytes per device | gateways + registry "
      "| Mosquitto connections | Mosquitto bytes per connection | gateways vs Mosquitto | errors |")
print("|---|---|---|---|---|---|---|---|---|")
for r in rows:
    gw, reg, mq = (int(r[k]) for k in ("gateway_bytes_per_device", "registry_bytes_per_device", "mqtt_bytes_per_connection"))
    print(f"| {r['held']} | {r['gateways']} | {gw} | {reg} | {gw + reg} | {r['mqtt_connections']} | {mq} | "
          f"{gw / mq if mq else float('nan'):.2f} | {r['errors']} |")
print(f"\nRaw: {sys.argv[1]} (full tables: target/bench/idle-sweep-<N>.txt); picture: scripts/plots.sh idle-sweep")
PY
