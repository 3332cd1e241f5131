#!/usr/bin/env bash
# A PostgreSQL server for the cluster's MLflow backend store (Debian's `postgresql` package):
#   postgres.sh start [--data DIR] [--host ADDR] [--port PORT]
#       initialise DIR if new (initdb), start the server (no-op if it runs), create the role `tm23`
#       and the database `tm23_mlflow` if absent, then print the backend URI on stdout:
#         postgresql+psycopg://tm23@ADDR:PORT/tm23_mlflow
#   postgres.sh stop|status [--data DIR]
#   postgres.sh uri [--host ADDR] [--port PORT]     print the URI only
#
# - Binds ADDR only: 127.0.0.1 by default (the MLflow server on the same node is its only client);
#   a cluster address when clients elsewhere need it; 0.0.0.0, * and :: are refused. Every TCP
#   login needs the role's password (scram-sha-256); from a cluster address only `tm23` may log in
#   to `tm23_mlflow`, from the address's own subnets (pg_hba `samenet`). The superuser logs in
#   only over the Unix socket inside DIR, as the OS user that runs the server (peer).
# - The role's password is generated here and stored in a libpq password file, mode 600
#   (TM23_PG_PASSFILE, default ~/.tm23-sweep/postgres.pgpass); the URI carries no password:
#   clients set PGPASSFILE to that file (mlflow_server.sh does), so it appears in no process list.
# - PostgreSQL refuses to run as root: run as root, the server runs as the `postgres` user that
#   Debian's package creates, and DIR defaults to that user's home (root's home is closed to it).
# Environment: TM23_PG_DIR (default ~/.tm23-sweep/postgres), TM23_PG_HOST (127.0.0.1),
#   TM23_PG_PORT (5432), TM23_PG_PASSFILE, TM23_PG_BIN (newest /usr/lib/postgresql/*/bin),
#   TM23_PG_OS_USER (the server's OS user when run as root; default postgres).
set -euo pipefail
role=tm23
database=tm23_mlflow
os_user=$(id -un)
if (( EUID == 0 )); then
  os_user=${TM23_PG_OS_USER:-postgres}
  getent passwd "$os_user" >/dev/null || { echo "[postgres] as root the server runs as '$os_user', who does not exist (apt-get install postgresql)" >&2; exit 1; }
  default_data=$(getent passwd "$os_user" | cut -d: -f6)/tm23-sweep
else
  default_data=$HOME/.tm23-sweep/postgres
fi
data=${TM23_PG_DIR:-$default_data}
host=${TM23_PG_HOST:-127.0.0.1}
port=${TM23_PG_PORT:-5432}
passfile=${TM23_PG_PASSFILE:-$HOME/.tm23-sweep/postgres.pgpass}
action=${1:-}
(($#)) && shift
while (($#)); do
  case $1 in
    --data) shift; data=${1:?--data needs a folder} ;;
    --host) shift; host=${1:?--host needs an address} ;;
    --port) shift; port=${1:?--port needs a number} ;;
    *) echo "usage: $0 start|stop|status|uri [--data DIR] [--host ADDR] [--port PORT]" >&2; exit 2 ;;
  esac
  shift
done
case $host in
  0.0.0.0|::|\*|"") echo "[postgres] refusing to bind '$host' (every interface); give 127.0.0.1 or the cluster address" >&2; exit 2 ;;
  *[!0-9a-zA-Z.:-]*) echo "[postgres] --host: '$host' is not an address" >&2; exit 2 ;;
esac
[[ $port =~ ^[0-9]+$ ]] || { echo "[postgres] --port: '$port' is not a number" >&2; exit 2; }
[[ $data == /* ]] || data=$PWD/$data
bin=${TM23_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
[[ -x $bin/pg_ctl ]] || { echo "[postgres] no PostgreSQL server found (apt-get install postgresql; listed in setup/apt-packages.txt)" >&2; exit 1; }
uri="postgresql+psycopg://$role@$host:$port/$database"

# a command as the server's OS user
as_server() {
  if (( EUID == 0 )); then runuser -u "$os_user" -- "$@"; else "$@"; fi
}
# SQL from stdin (never argv: it may hold a password) as the superuser over the socket in $data
psql_super() {
  as_server "$bin/psql" -h "$data" -p "$port" -d postgres -v ON_ERROR_STOP=1 -qAtX "$@"
}
running() {
  [[ -f $data/PG_VERSION ]] && as_server "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1
}

init() {
  [[ -f $data/PG_VERSION ]] && return 0
  if [[ -e $data && -n $(ls -A "$data" 2>/dev/null) ]]; then
    echo "[postgres] $data exists and is not a PostgreSQL data folder; name an empty or new one" >&2; return 2
  fi
  mkdir -p "$data"
  (( EUID == 0 )) && chown "$os_user:" "$data"
  chmod 700 "$data"
  as_server test -w "$data" || { echo "[postgres] $data: the server's user '$os_user' cannot write it (or a folder above it)" >&2; return 2; }
  as_server "$bin/initdb" -D "$data" -U "$os_user" -E UTF8 --locale=C.UTF-8 \
    --auth-local=peer --auth-host=scram-sha-256 >"$data.initdb.log" 2>&1 \
    || { echo "[postgres] initdb failed; see $data.initdb.log" >&2; return 1; }
  rm -f "$data.initdb.log"
  echo "[postgres] initialised $data" >&2
}

start() {
  init
  case $host in
    127.*|localhost|::1) ;;
    *) local rule="host $database $role samenet scram-sha-256  # tm23-sweep: the cluster's MLflow"
       as_server grep -qF "$rule" "$data/pg_hba.conf" || printf '%s\n' "$rule" | as_server tee -a "$data/pg_hba.conf" >/dev/null ;;
  esac
  if running; then
    echo "[postgres] already running ($data)" >&2
  else
    as_server "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 -o \
      "-c listen_addresses=$host -c port=$port -c unix_socket_directories=$data -c password_encryption=scram-sha-256" \
      start >/dev/null || { echo "[postgres] did not start; last lines of $data/server.log:" >&2; tail -n 20 "$data/server.log" >&2; return 1; }
    echo "[postgres] started on $host:$port ($data)" >&2
  fi
  local has_role password
  has_role=$(psql_super <<<"SELECT 1 FROM pg_roles WHERE rolname = '$role'")
  if [[ $has_role != 1 || ! -s $passfile ]]; then
    # a new role, or one whose password file is gone: (re)set its password
    password=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
    if [[ $has_role == 1 ]]; then
      psql_super <<<"ALTER ROLE $role PASSWORD '$password'"
    else
      psql_super <<<"CREATE ROLE $role LOGIN PASSWORD '$password'"
    fi
    mkdir -p "$(dirname "$passfile")"
    (umask 077 && printf '*:*:*:%s:%s\n' "$role" "$password" >"$passfile.tmp" && mv "$passfile.tmp" "$passfile")
    echo "[postgres] password of role $role in $passfile (mode 600)" >&2
  fi
  chmod 600 "$passfile"
  if [[ $(psql_super <<<"SELECT 1 FROM pg_database WHERE datname = '$database'") != 1 ]]; then
    psql_super <<<"CREATE DATABASE $database OWNER $role"
    echo "[postgres] created database $database" >&2
  fi
  echo "$uri"
}

stop() {
  if running; then
    as_server "$bin/pg_ctl" -D "$data" -m fast -w -t 60 stop >/dev/null
    echo "[postgres] stopped ($data)" >&2
  else
    echo "[postgres] not running ($data)" >&2
  fi
}

case $action in
  start) start ;;
  stop) stop ;;
  status) if running; then echo "[postgres] running ($data)"; else echo "[postgres] not running ($data)"; exit 1; fi ;;
  uri) echo "$uri" ;;
  *) echo "usage: $0 start|stop|status|uri [--data DIR] [--host ADDR] [--port PORT]" >&2; exit 2 ;;
esac
