# Sourced by scripts/*.sh: make sure a Postgres answers at $DATABASE_URL and its database exists.
#
# Order of attempts: the server already running; the machine's cluster (pg_ctlcluster); a
# throwaway cluster under target/pgdata started with initdb/pg_ctl (installing Debian's
# postgresql first when no server binaries exist at all).

: "${DATABASE_URL:=postgres://postgres@127.0.0.1:5432/presence}"
export DATABASE_URL

pg_server_url() { echo "${DATABASE_URL%/*}/postgres"; }
pg_db_name() { local name="${DATABASE_URL##*/}"; echo "${name%%\?*}"; }
pg_port() { local rest="${DATABASE_URL#*://}"; rest="${rest#*@}"; rest="${rest%%/*}"; [[ "$rest" == *:* ]] && echo "${rest##*:}" || echo 5432; }

pg_ready() { psql "$(pg_server_url)" -qtAc 'SELECT 1' >/dev/null 2>&1; }

pg_wait() {
  for _ in $(seq 1 60); do pg_ready && return 0; sleep 0.5; done
  return 1
}

pg_bin() {
  local found
  found=$(command -v "$1" 2>/dev/null) && { echo "$found"; return; }
  ls /usr/lib/postgresql/*/bin/"$1" 2>/dev/null | sort -V | tail -n 1
}

pg_start_throwaway() {
  local root dir initdb pg_ctl as=()
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
  dir="$root/target/pgdata"
  initdb=$(pg_bin initdb); pg_ctl=$(pg_bin pg_ctl)
  if [[ -z "$initdb" || -z "$pg_ctl" ]]; then
    echo "postgres: no server binaries; installing Debian's postgresql" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    initdb=$(pg_bin initdb); pg_ctl=$(pg_bin pg_ctl)
  fi
  # initdb refuses to run as root.
  if [[ $(id -u) -eq 0 ]]; then
    id postgres >/dev/null 2>&1 || useradd --system --home "$dir" postgres
    as=(runuser -u postgres --)
  fi
  mkdir -p "$dir" && [[ ${#as[@]} -gt 0 ]] && chown postgres "$dir"
  if [[ ! -f "$dir/PG_VERSION" ]]; then
    "${as[@]}" "$initdb" -D "$dir" -U postgres --auth=trust >/dev/null
  fi
  "${as[@]}" "$pg_ctl" -D "$dir" -l "$dir/server.log" -w \
    -o "-p $(pg_port) -c listen_addresses=127.0.0.1 -k /tmp" start >/dev/null
}

ensure_postgres() {
  if ! pg_ready; then
    echo "postgres: not reachable at $(pg_server_url); starting it" >&2
    if command -v pg_ctlcluster >/dev/null && ls /etc/postgresql/ >/dev/null 2>&1; then
      for version in $(ls /etc/postgresql/); do
        pg_ctlcluster --skip-systemctl-redirect "$version" main start >/dev/null 2>&1 || true
      done
    fi
    pg_wait || { pg_start_throwaway && pg_wait; } || { echo "postgres: could not start a server" >&2; return 1; }
  fi
  local db; db=$(pg_db_name)
  if [[ -z $(psql "$(pg_server_url)" -qtAc "SELECT 1 FROM pg_database WHERE datname = '$db'") ]]; then
    psql "$(pg_server_url)" -qc "CREATE DATABASE \"$db\"" >/dev/null
  fi
}

# Databases left by earlier test runs (testkit::database creates one per test).
drop_test_databases() {
  local db
  for db in $(psql "$(pg_server_url)" -qtAc "SELECT datname FROM pg_database WHERE datname LIKE 'presence\_test\_%'"); do
    psql "$(pg_server_url)" -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true
  done
}
