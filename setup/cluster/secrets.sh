#!/usr/bin/env bash
# The cluster's two secrets, made on first use and never printed (safe to run again):
#   ~/.ray/auth_token      Ray's token auth (every node and driver reads it; mode 600)
#   ~/.mlflow/credentials  MLflow's basic-auth user tm23 and a random password (mode 600): the
#                          tracking server takes it as its admin's, clients read it natively
# prepare_local.sh runs it before `ray up` copies both to every node; the Slurm job
# (slurm/tm23-sweep.sbatch) runs it on the batch node, where the home folder is the cluster's.
set -euo pipefail
here=$(dirname "$(readlink -f "$0")")
project=$(cd "$here/../.." && pwd)
venv=$project/.venv

mkdir -p ~/.ray && chmod 700 ~/.ray
if [[ ! -s ~/.ray/auth_token ]]; then
  # `ray get-auth-token` writes the token to stdout too: /dev/null, so that no log holds it
  (umask 077 && RAY_AUTH_MODE=token "$venv/bin/ray" get-auth-token --generate >/dev/null 2>&1)
  echo "[secrets] generated Ray's auth token in ~/.ray/auth_token"
fi
chmod 600 ~/.ray/auth_token
mkdir -p ~/.mlflow && chmod 700 ~/.mlflow
if [[ ! -s ~/.mlflow/credentials ]]; then
  (umask 077 && "$venv/bin/python" -c '
import secrets
print("[mlflow]\nmlflow_tracking_username = tm23\nmlflow_tracking_password = " + secrets.token_hex(24))
' >~/.mlflow/credentials)
  echo "[secrets] generated MLflow credentials in ~/.mlflow/credentials"
fi
chmod 600 ~/.mlflow/credentials
