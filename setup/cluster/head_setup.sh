#!/usr/bin/env bash
# Run on the head node by cluster.yaml's head_setup_commands, over ssh, at every `ray up`.
#  1. Puts setup/cluster/bin (the `ray` wrapper) first on the ssh login PATH, through one
#     marked line in ~/.bashrc: `ray down` needs `ray` there, and its `ray stop` must also
#     stop the MLflow server.
#  2. Makes sure Ray's auth token exists (~/.ray/auth_token, mode 600). It is created here,
#     on the head, and never printed: `ray get-auth-token` writes it to stdout, which goes
#     to /dev/null so that it cannot reach `ray up`'s output or any log.
set -euo pipefail
here=$(dirname "$(readlink -f "$0")")
project=$(cd "$here/../.." && pwd)
ray="$project/.venv/bin/ray"
[[ -x $ray ]] || { echo "[head] $ray missing: run 'make setup' in $project" >&2; exit 1; }

marker="# tm23-sweep: ray wrapper on the login PATH (setup/cluster/head_setup.sh)"
line="export PATH=\"\$HOME/.tm23-sweep/project/setup/cluster/bin:\$PATH\"  $marker"
touch ~/.bashrc
if ! grep -qF "$marker" ~/.bashrc; then
  printf '%s\n' "$line" >>~/.bashrc
  echo "[head] added setup/cluster/bin to the login PATH in ~/.bashrc"
fi

token=~/.ray/auth_token
if [[ ! -s $token ]]; then
  (umask 077 && RAY_AUTH_MODE=token "$ray" get-auth-token --generate >/dev/null 2>&1)
  echo "[head] generated Ray's auth token in $token"
fi
chmod 700 ~/.ray
chmod 600 "$token"
