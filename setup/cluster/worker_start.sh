#!/usr/bin/env bash
# worker_start_ray_commands of cluster.yaml, on each worker: join the head's Ray cluster
# (RAY_HEAD_IP is set by Ray's autoscaler) from this node's address on the route to the head,
# with token auth (~/.ray/auth_token, copied here by `ray up`).
# The Slurm job (slurm/ray_node.sh) runs it too, under srun: it sets TM23_RAY_PORT (the job's
# GCS port; default 6379) and TM23_RAY_STOP_FIRST=0 (`ray stop` would end every Ray of this
# user on the node, other jobs' too), and passes extra `ray start` options (--block, the job's
# ports, its temp dir) as arguments.
set -euo pipefail
here=$(dirname "$(readlink -f "$0")")
project=$(cd "$here/../.." && pwd)
: "${RAY_HEAD_IP:?is set by the autoscaler of Ray}"
# the source address of the route to the head: the address the head reaches this node on
own_ip=$("$project/.venv/bin/python" - "$RAY_HEAD_IP" <<'PY'
import socket, sys
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    s.connect((sys.argv[1], 6379))  # UDP: no packet is sent
    print(s.getsockname()[0])
PY
)
port=${TM23_RAY_PORT:-6379}
export RAY_AUTH_MODE=token
if [[ ${TM23_RAY_STOP_FIRST:-1} != 0 ]]; then
  "$project/.venv/bin/ray" stop
fi
exec "$project/.venv/bin/ray" start --address="$RAY_HEAD_IP:$port" --node-ip-address="$own_ip" --disable-usage-stats "$@"
