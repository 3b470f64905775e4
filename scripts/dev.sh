#!/usr/bin/env bash
# Brings the whole system up on this machine: Postgres, registry, gateway, notifier, REST facade,
# and the web demo page (clients/js) when Node.js is installed.
# REGISTRIES=3 scripts/dev.sh runs three registry processes that share the users (gRPC 7200,
# 7201, 7202; metrics 9200, 9210, 9220). Ctrl-C stops everything cleanly. Logs: target/dev/*.log.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/postgres.sh

ensure_postgres
echo "== building"
cargo build --workspace --bins --quiet
bin="${CARGO_TARGET_DIR:-target}/debug"
logs=target/dev; mkdir -p "$logs"

pids=()
stop() {
  trap - INT TERM EXIT
  echo; echo "== stopping"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "stopped"
  exit 0
}
trap stop INT TERM EXIT

start() { # name, then the command
  local name=$1; shift
  "$@" >"$logs/$name.log" 2>&1 &
  pids+=($!)
}

wait_http() { # url, name
  for _ in $(seq 1 100); do
    curl -fsS "$1" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "$2 did not come up; see $logs/$2.log" >&2; tail -n 20 "$logs/$2.log" >&2; exit 1
}

export RUST_LOG="${RUST_LOG:-info}"
echo "== migrating $DATABASE_URL"
"$bin/presence-migrate"
# Internal calls are authenticated: a fresh secret for this run (only the registry holds it) and
# a caller token for each service, as an operator mints them (docs/configuration.md).
secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
caller_token() { REGISTRY_INTERNAL_SECRET="$secret" "$bin/presence-cli" internal-token --role "$1" --id "$2"; }
registries=${REGISTRIES:-1}
for i in $(seq 0 $((registries - 1))); do
  name=presence-registry; [[ $registries -gt 1 ]] && name="presence-registry-$((i + 1))"
  start "$name" env REGISTRY_INTERNAL_SECRET="$secret" REGISTRY_ID="registry-$((i + 1))" \
    REGISTRY_LISTEN_ADDR="127.0.0.1:$((7200 + i))" REGISTRY_METRICS_ADDR="127.0.0.1:$((9200 + 10 * i))" \
    "$bin/presence-registry"
  wait_http "http://127.0.0.1:$((9200 + 10 * i))/healthz" "$name"
done
psql "$DATABASE_URL" -q -f scripts/dev-seed.sql >/dev/null
start connection-gateway env GATEWAY_ID=gw-1 GATEWAY_WS_LISTEN_ADDR=127.0.0.1:7101 \
  INTERNAL_TOKEN="$(caller_token gateway gw-1)" "$bin/connection-gateway"
start notifier "$bin/notifier"
start rest-facade env INTERNAL_TOKEN="$(caller_token facade facade-1)" "$bin/rest-facade"
wait_http http://127.0.0.1:9100/healthz connection-gateway
wait_http http://127.0.0.1:9300/healthz notifier
wait_http http://127.0.0.1:8080/healthz rest-facade

# The web demo (clients/js): a page per user that shows its contacts' status live over WebSocket.
web="(needs Node.js 20 and npm)"
if command -v npm >/dev/null; then
  echo "== building the web client (clients/js)"
  (cd clients/js && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build) >"$logs/web-build.log" 2>&1 \
    || { echo "the web client did not build; see $logs/web-build.log" >&2; exit 1; }
  start web-demo env DEMO_LISTEN=127.0.0.1:8090 DEMO_GATEWAY_WS=ws://127.0.0.1:7101/v1/connect \
    DEMO_TOKEN_SECRET=dev-token-secret DEMO_APP_ID=default node clients/js/demo/serve.mjs
  wait_http http://127.0.0.1:8090/config.json web-demo
  web="http://127.0.0.1:8090/?user=alice&contacts=bob   (and ?user=bob&contacts=alice in another tab)"
fi

token=$("$bin/presence-cli" token --user alice --secret dev-token-secret 2>/dev/null || echo "(build presence-cli)")
cat <<INFO

presence is up (database $DATABASE_URL)
  devices      tcp://127.0.0.1:7100        connection-gateway (metrics :9100)
  web devices  ws://127.0.0.1:7101/v1/connect
  web demo     $web
  REST         http://127.0.0.1:8080       rest-facade (/openapi.json; metrics :9400)
  gRPC         http://127.0.0.1:7200       presence-registry (metrics :9200; $registries process(es), see below)
  callbacks    notifier (metrics :9300) -> http://127.0.0.1:9000/callbacks

  app 'default': REST API key  dev-api-key
                 token secret  dev-token-secret   (a token for alice: $token)

Try, in other terminals:
  $bin/presence-cli receive                                   # print callbacks as they arrive
  $bin/presence-cli connect --user alice --platform ios       # a device; stays online
  $bin/presence-cli connect --user alice --platform android   # kicks the first (single_device)
  $bin/presence-cli query alice bob                           # REST status query

Logs in $logs/. Ctrl-C stops everything.
INFO
if [[ $registries -gt 1 ]]; then
  echo "Registries: 127.0.0.1:7200..$((7200 + registries - 1)) share the partitions:"
  psql "$DATABASE_URL" -Atc "SELECT m.member || ' at ' || m.addr || ': ' || count(*) || ' partitions' \
    FROM registry_partitions t JOIN presence_members m ON m.member = t.owner GROUP BY m.member, m.addr ORDER BY 1"
fi
wait -n "${pids[@]}" || true
echo "a service exited; see $logs/" >&2
exit 1
