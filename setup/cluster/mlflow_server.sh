#!/usr/bin/env bash
# The MLflow tracking server of a tm23-sweep Ray cluster, run on the head node:
#   mlflow_server.sh start    start it in the background (no-op if it already runs), wait for /health
#   mlflow_server.sh stop     stop it and every process it spawned (its own process group)
#   mlflow_server.sh status   exit 0 if it runs and answers /health
# cluster.yaml starts it in head_start_ray_commands; `ray down` stops it through bin/ray.
#
# Bound to 127.0.0.1 with one worker and a sqlite backend; reach it from elsewhere with
# `ssh -L 5000:127.0.0.1:5000 <head>`. Environment (all optional):
#   TM23_RUNS_DIR     runs root holding mlruns.db and mlartifacts/   (default ~/tm23-runs)
#   TM23_STATE_DIR    where the PID file and the server log go       (default ~/.tm23-sweep)
#   TM23_MLFLOW_HOST  address to bind (default 127.0.0.1); only for several nodes, where trials
#                     log from the workers: the head's private address, in a closed network
#   TM23_MLFLOW_PORT  port                                           (default 5000)
#   TM23_MLFLOW_BACKEND_URI  another backend, e.g. postgresql://host/db (needs psycopg2 in
#                     the venv; the password in ~/.pgpass, never in cluster.yaml)
set -euo pipefail

here=$(dirname "$(readlink -f "$0")")
project=$(cd "$here/../.." && pwd)
venv_bin="$project/.venv/bin"
runs=${TM23_RUNS_DIR:-$HOME/tm23-runs}
state=${TM23_STATE_DIR:-$HOME/.tm23-sweep}
host=${TM23_MLFLOW_HOST:-127.0.0.1}
port=${TM23_MLFLOW_PORT:-5000}
backend=${TM23_MLFLOW_BACKEND_URI:-sqlite:///$runs/mlruns.db}
pidfile="$state/mlflow-server.pid"
log="$state/mlflow-server.log"
url="http://$host:$port"
if [[ $host == 0.0.0.0 ]]; then url="http://127.0.0.1:$port"; fi
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
  mkdir -p "$runs" "$state"
  chmod 700 "$state"
  # setsid: its own session and process group, so the ssh session of `ray up` can end and
  # `stop` can end the server's children (uvicorn workers) with one group signal.
  # The inner shell records its own PID before exec'ing mlflow, so the PID is the server's.
  # Job execution (huey consumers, a /dev/shm spool) is for MLflow's GenAI jobs, not tracking.
  MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pidfile" \
    "$venv_bin/mlflow" server \
    --backend-store-uri "$backend" \
    --artifacts-destination "$runs/mlartifacts" \
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
  echo "[mlflow] server up (pid $(<"$pidfile")) at $url, backend $backend, log $log"
}

stop() {
  local pid
  if ! pid=$(running_pid); then
    rm -f "$pidfile"
    echo "[mlflow] not running"
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
