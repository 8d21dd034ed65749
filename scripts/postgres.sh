# shellcheck shell=bash
# Helpers to install and run a project-local Postgres cluster from the system's packages.
# Sourced by scripts/run-local.sh and scripts/test.sh.

# Finds the newest Postgres server binaries, installing Debian's `postgresql` when there are none.
ensure_postgres() {
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    echo "==> installing the Postgres server (apt-get install postgresql)"
    local SUDO=""
    if [ "$(id -u)" != 0 ]; then
      command -v sudo >/dev/null || { echo "Postgres is not installed and neither root nor sudo is available" >&2; exit 1; }
      SUDO=sudo
    fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  fi
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  export PG_BIN
}

# Runs a Postgres binary; as root it must run as the `postgres` user.
pg_run() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$PG_BIN/$1" "${@:2}"
  else
    "$PG_BIN/$1" "${@:2}"
  fi
}

# Picks a directory for a cluster: $1 when the postgres user can reach it, else one under /var/tmp.
pg_dir() {
  local wanted=$1
  if [ "$(id -u)" = 0 ]; then
    mkdir -p "$wanted"
    if ! runuser -u postgres -- test -x "$(dirname "$wanted")"; then
      wanted="/var/tmp/pimbridge-pg-$(printf '%s' "$wanted" | md5sum | cut -c1-8)"
    fi
  fi
  printf '%s' "$wanted"
}

# start_cluster DIR PORT: initialises DIR once and starts the server on 127.0.0.1:PORT if it is not
# running. Sets PG_STARTED=1 when this call started it. TCP only: a Unix socket inside a deep checkout
# would exceed the 107-byte socket path limit and Postgres would refuse to start.
start_cluster() {
  local dir=$1 port=$2
  PG_STARTED=0
  mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$dir"
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    pg_run initdb -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 -N >/dev/null
  fi
  if ! pg_run pg_ctl -D "$dir/data" status >/dev/null 2>&1; then
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "port $port on 127.0.0.1 is already taken by another process; stop it or set PIMBRIDGE_DATABASE__URL" >&2
      return 1
    fi
    if ! pg_run pg_ctl -D "$dir/data" -l "$dir/postgres.log" -w -t 30 \
      -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories='' -c max_connections=400 ${PG_EXTRA_OPTS:-}" start >/dev/null; then
      echo "Postgres did not start; the end of $dir/postgres.log:" >&2
      tail -n 20 "$dir/postgres.log" >&2 || true
      return 1
    fi
    PG_STARTED=1
  fi
  echo "==> Postgres on 127.0.0.1:$port (data in $dir/data)"
}

# stop_cluster DIR
stop_cluster() {
  pg_run pg_ctl -D "$1/data" -m fast -w stop >/dev/null 2>&1 || true
}
