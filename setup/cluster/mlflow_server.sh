#!/usr/bin/env bash
# The MLflow tracking server of a tm23-sweep Ray cluster, run on the head node:
#   mlflow_server.sh start    start it in the background (no-op if it already runs), wait for /health
#   mlflow_server.sh stop     stop it and every process it spawned (its own process group)
#   mlflow_server.sh status   exit 0 if it runs and answers /health
# cluster.yaml starts it in head_start_ray_commands; `ray down` stops it through bin/ray.
#
# One worker, its backend store and its artifacts on this node's own disk (never on a shared
# mount: sqlite there is unsafe), artifacts served to every client through the server
# (`mlflow-artifacts:/`, --serve-artifacts), so runs logged on any node keep them here.
# Environment (all optional):
#   TM23_MLFLOW_DIR   backend store, artifacts and auth database  (default ~/.tm23-sweep/mlflow)
#   TM23_STATE_DIR    where the PID file and the server log go     (default ~/.tm23-sweep)
#   TM23_MLFLOW_HOST  address to bind (default 127.0.0.1). On a cluster: the head's cluster
#                     address, which the workers reach (head_start.sh sets it); never 0.0.0.0
#   TM23_MLFLOW_PORT  port                                         (default 5000)
#   TM23_MLFLOW_AUTH  basic | none. Default: none on a loopback address, basic otherwise:
#                     MLflow's basic-auth app; every request but /health needs the user and
#                     password of ~/.mlflow/credentials (made by prepare_local.sh, copied to
#                     every node by `ray up`); the password reaches the server in its environment
#   TM23_MLFLOW_BACKEND  sqlite (default: $TM23_MLFLOW_DIR/mlruns.db) | postgres: PostgreSQL on this
#                     node (setup/cluster/postgres.sh start: bound to 127.0.0.1, its data in
#                     TM23_PG_DIR, the role's password in TM23_PG_PASSFILE, which the server reads
#                     as PGPASSFILE: the URI and the process list carry no password); `stop` stops
#                     that PostgreSQL too
#   TM23_MLFLOW_BACKEND_URI  another backend store (overrides TM23_MLFLOW_BACKEND)
set -euo pipefail

here=$(dirname "$(readlink -f "$0")")
project=$(cd "$here/../.." && pwd)
venv_bin="$project/.venv/bin"
data=${TM23_MLFLOW_DIR:-$HOME/.tm23-sweep/mlflow}
state=${TM23_STATE_DIR:-$HOME/.tm23-sweep}
host=${TM23_MLFLOW_HOST:-127.0.0.1}
port=${TM23_MLFLOW_PORT:-5000}
backend_kind=${TM23_MLFLOW_BACKEND:-sqlite}
[[ $backend_kind == sqlite || $backend_kind == postgres ]] \
  || { echo "[mlflow] TM23_MLFLOW_BACKEND must be sqlite or postgres, not $backend_kind" >&2; exit 2; }
backend=${TM23_MLFLOW_BACKEND_URI:-sqlite:///$data/mlruns.db}
case $host in
  127.*|localhost|::1) default_auth=none ;;
  0.0.0.0|::) echo "[mlflow] refusing to bind $host (every interface); give the cluster address" >&2; exit 2 ;;
  *) default_auth=basic ;;
esac
auth=${TM23_MLFLOW_AUTH:-$default_auth}
credentials=$HOME/.mlflow/credentials
pidfile="$state/mlflow-server.pid"
pg_record="$state/mlflow-postgres.env"   # the PostgreSQL that `start` started, for `stop`
log="$state/mlflow-server.log"
url="http://$host:$port"
health="$url/health"

# The recorded PID, if that process is still an MLflow server (a stale file or a reused PID is not).
running_pid() {
  [[ -f $pidfile ]] || return 1
  local pid
  pid=$(<"$pidfile")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -q 'mlflow.* server' || return 1
  echo "$pid"
}

read_credential() {
  "$venv_bin/python" - "$credentials" "$1" <<'EOF'
import configparser, sys
config = configparser.ConfigParser()
config.read(sys.argv[1])
print(config.get("mlflow", sys.argv[2], fallback=""))
EOF
}

healthy() {
  "$venv_bin/python" - "$health" <<'EOF' >/dev/null 2>&1
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
    sys.exit(0 if r.status == 200 else 1)
EOF
}

start() {
  if pid=$(running_pid); then
    echo "[mlflow] already running (pid $pid) at $url"
    return 0
  fi
  mkdir -p "$data" "$state"
  chmod 700 "$state" "$data"
  local app=() auth_env=()
  if [[ $auth == basic ]]; then
    [[ -f $credentials ]] || { echo "[mlflow] $credentials missing: run setup/cluster/prepare_local.sh" >&2; return 2; }
    local user password
    user=$(read_credential mlflow_tracking_username)
    password=$(read_credential mlflow_tracking_password)
    [[ -n $user && -n $password ]] || { echo "[mlflow] $credentials lacks a user or a password" >&2; return 2; }
    # auth_cache_ttl_seconds: each request's password check is a PBKDF2 hash, and a trial makes
    # tens of requests (measured: seconds of logging per trial without the cache)
    (umask 077 && printf '%s\n' "[mlflow]" "default_permission = READ" \
      "database_uri = sqlite:///$data/basic_auth.db" "admin_username = $user" \
      "authorization_function = mlflow.server.auth:authenticate_request_basic_auth" \
      "auth_cache_ttl_seconds = 300" >"$data/basic_auth.ini")
    # the auth app's CSRF key: made once, kept beside its database, mode 600
    [[ -s $data/flask_secret ]] || (umask 077 && "$venv_bin/python" -c 'import secrets; print(secrets.token_hex(32))' >"$data/flask_secret")
    app=(--app-name basic-auth)
    auth_env=(MLFLOW_AUTH_CONFIG_PATH="$data/basic_auth.ini" MLFLOW_AUTH_ADMIN_PASSWORD="$password"
              MLFLOW_FLASK_SERVER_SECRET_KEY="$(<"$data/flask_secret")")
  elif [[ $auth != none ]]; then
    echo "[mlflow] TM23_MLFLOW_AUTH must be basic or none, not $auth" >&2; return 2
  fi
  if [[ $backend_kind == postgres && -z ${TM23_MLFLOW_BACKEND_URI:-} ]]; then
    # its only client is this server: PostgreSQL listens on loopback whatever address MLflow binds
    backend=$(TM23_PG_HOST=127.0.0.1 "$here/postgres.sh" start) || return 1
    export PGPASSFILE=${TM23_PG_PASSFILE:-$HOME/.tm23-sweep/postgres.pgpass}
    (umask 077 && printf 'TM23_PG_DIR=%q\nTM23_PG_PORT=%q\n' "${TM23_PG_DIR:-}" "${TM23_PG_PORT:-}" >"$pg_record")
  fi
  # SQLAlchemy's default pool (5 + 10 overflow) deadlocks the server once ~15 requests are in
  # flight: each holds one connection "idle in transaction" and waits for a second (measured with
  # 128 clients, benchmarks/tracking_load.py). Room for two per request thread (anyio's 40);
  # PostgreSQL's default max_connections is 100.
  # MLflow accepts Host headers of localhost and private addresses only (DNS-rebinding guard): a
  # head on a public address must name itself, or every worker's request is refused
  export MLFLOW_SERVER_ALLOWED_HOSTS=${MLFLOW_SERVER_ALLOWED_HOSTS:-$host,$host:$port,localhost,localhost:$port,127.0.0.1,127.0.0.1:$port}
  export MLFLOW_SQLALCHEMYSTORE_POOL_SIZE=${MLFLOW_SQLALCHEMYSTORE_POOL_SIZE:-45}
  export MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW=${MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW:-40}
  # setsid: its own session and process group, so the ssh session of `ray up` can end and
  # `stop` can end the server's children (uvicorn workers) with one group signal.
  # The inner shell records its own PID before exec'ing mlflow, so the PID is the server's.
  # Job execution (huey consumers, a /dev/shm spool) is for MLflow's GenAI jobs, not tracking.
  env "${auth_env[@]}" MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
    setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pidfile" \
    "$venv_bin/mlflow" server "${app[@]}" \
    --backend-store-uri "$backend" \
    --serve-artifacts --artifacts-destination "$data/artifacts" \
    --host "$host" --port "$port" --workers 1 \
    </dev/null >"$log" 2>&1 &
  local waited=0
  until healthy; do
    if (( waited >= 90 )); then
      echo "[mlflow] no answer from $health after ${waited} s; last lines of $log:" >&2
      tail -n 20 "$log" >&2 || true
      stop >/dev/null 2>&1 || true
      return 1
    fi
    sleep 1
    waited=$((waited + 1))
  done
  echo "[mlflow] server up (pid $(<"$pidfile")) at $url, auth $auth, backend ${backend%%://*}, log $log"
}

stop() {
  local pid
  if ! pid=$(running_pid); then
    rm -f "$pidfile"
    echo "[mlflow] not running"
    stop_postgres
    return 0
  fi
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do
    kill -0 -- "-$pid" 2>/dev/null || break
    sleep 0.2
  done
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$pidfile"
  echo "[mlflow] stopped (pid $pid)"
  stop_postgres
}

stop_postgres() {
  [[ -f $pg_record ]] || return 0
  (set -a && source "$pg_record" && set +a
   [[ -n $TM23_PG_DIR ]] || unset TM23_PG_DIR
   [[ -n $TM23_PG_PORT ]] || unset TM23_PG_PORT
   "$here/postgres.sh" stop) && rm -f "$pg_record"
}

status() {
  local pid
  if pid=$(running_pid) && healthy; then
    echo "[mlflow] running (pid $pid) at $url"
    return 0
  fi
  echo "[mlflow] not running"
  return 1
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
