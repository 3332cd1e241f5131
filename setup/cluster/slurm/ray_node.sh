#!/usr/bin/env bash
# One Ray node of a Slurm job, run by tm23-sweep.sbatch under `srun` (one task per node):
#   ray_node.sh head   Ray's head on this node (TM23_HEAD_ADDR), GCS on the job's port
#   ray_node.sh worker joins the head through setup/cluster/worker_start.sh
# Both run `ray start --block`: Ray stays a child of this srun step, so Slurm tracks it and ends
# it with the step (and the job); nothing is left to a `ray stop`, which would end every Ray of
# this user on the node, other jobs' too.
#
# Ports: each job takes a block of 1000 from TM23_PORT_BASE (the sbatch script derives it from
# the job id): GCS at base (no Ray client server: ray[tune] lacks it), and per node slot s (0 head, 1.. workers;
# slots only need to differ between nodes that share a host) node manager, object manager,
# runtime-env agent, dashboard agent gRPC/HTTP and metrics at base+10+10s .. +5, worker
# processes at base+100+100s .. +199. Nothing falls back to Ray's defaults (6379, 10002-19999),
# which another job or user on a shared node may hold.
# Environment: TM23_PORT_BASE, TM23_HEAD_ADDR, TM23_RAY_CPUS (CPUs this node gives Ray),
# TM23_RAY_TMP (node-local folder prefix; Ray's unix sockets need a short path).
set -euo pipefail
here=$(dirname "$(readlink -f "$0")")
project=$(cd "$here/../../.." && pwd)
role=${1:?usage: ray_node.sh head|worker}
: "${TM23_PORT_BASE:?set by tm23-sweep.sbatch}" "${TM23_HEAD_ADDR:?set by tm23-sweep.sbatch}"
base=$TM23_PORT_BASE
if [[ $role == head ]]; then slot=0; else slot=$(( (${SLURM_NODEID:-0} + 1) % 9 )); fi
node=$((base + 10 + 10 * slot))
workers=$((base + 100 + 100 * slot))
tmp="${TM23_RAY_TMP:-/tmp/tm23-ray-${SLURM_JOB_ID:-0}}-$slot"
cpus=${TM23_RAY_CPUS:-${SLURM_CPUS_PER_TASK:-${SLURM_CPUS_ON_NODE:-1}}}
ports=(--node-manager-port="$node" --object-manager-port="$((node + 1))"
       --runtime-env-agent-port="$((node + 2))" --dashboard-agent-grpc-port="$((node + 3))"
       --dashboard-agent-listen-port="$((node + 4))" --metrics-export-port="$((node + 5))"
       --min-worker-port="$workers" --max-worker-port="$((workers + 99))")
common=(--num-cpus="$cpus" --temp-dir="$tmp" --block "${ports[@]}")
export RAY_AUTH_MODE=token
echo "[slurm $(date +%T)] Ray $role on $(hostname) (${SLURMD_NODENAME:-?}, slot $slot): $cpus CPUs, temp $tmp"
case $role in
  head)
    exec "$project/.venv/bin/ray" start --head --node-ip-address="$TM23_HEAD_ADDR" --port="$base" \
      --include-dashboard=false --disable-usage-stats "${common[@]}" ;;
  worker)
    RAY_HEAD_IP=$TM23_HEAD_ADDR TM23_RAY_PORT=$base TM23_RAY_STOP_FIRST=0 \
      exec "$here/../worker_start.sh" "${common[@]}" ;;
  *) echo "usage: ray_node.sh head|worker" >&2; exit 2 ;;
esac
