#!/usr/bin/env bash
# head_start_ray_commands of cluster.yaml, on the head node: Ray's head on the address that
# cluster.yaml names (provider.head_ip, read from the bootstrap config that `ray up` copied
# here), then the cluster's MLflow server bound to that same address.
#  - With worker_ips, the head gets no CPUs (TM23_HEAD_CPUS overrides): trials run on the
#    workers, and the head keeps the driver, the GCS and the tracking server.
#  - Ray 2.60's autoscaler v2 counts the local provider's head as one of its worker_ips' nodes
#    (measured: with 2 worker_ips it started 1 worker), so the head starts the v1 autoscaler.
#  - MLflow binds the head's address with basic auth whenever it is not a loopback address
#    (setup/cluster/mlflow_server.sh); sweeps then log to http://<head_ip>:5000, which is also
#    written to ~/.tm23-sweep/tracking-uri on the head.
#  - A cloud provider (cluster-aws.yaml, cluster-gcp.yaml) has no provider.head_ip: those files
#    give the head's private address as TM23_HEAD_IP and TM23_HEAD_CPUS=0.
set -euo pipefail
here=$(dirname "$(readlink -f "$0")")
project=$(cd "$here/../.." && pwd)
py="$project/.venv/bin/python"
case ${TM23_HEAD_IP-unset} in
  0.0.0.0|::|"") echo "[head] refusing to bind '${TM23_HEAD_IP-}'; give the head's cluster address" >&2; exit 2 ;;
esac
bootstrap=${TM23_BOOTSTRAP_CONFIG:-$HOME/ray_bootstrap_config.yaml}
read -r head_ip n_workers < <("$py" - "$bootstrap" <<'PY'
import sys, yaml
provider = yaml.safe_load(open(sys.argv[1]))["provider"]
print(provider.get("head_ip", "127.0.0.1"), len(provider.get("worker_ips") or []))
PY
)
head_ip=${TM23_HEAD_IP:-$head_ip}
cpus=()
if [[ -n ${TM23_HEAD_CPUS:-} ]]; then
  cpus=(--num-cpus="$TM23_HEAD_CPUS")
elif (( n_workers > 0 )); then
  cpus=(--num-cpus=0)
fi
RAY_enable_autoscaler_v2=0 RAY_AUTH_MODE=token "$project/.venv/bin/ray" start --head --node-ip-address="$head_ip" --port=6379 \
  --dashboard-host="$head_ip" \
  --autoscaling-config="$bootstrap" --disable-usage-stats "${cpus[@]}"
TM23_MLFLOW_HOST="$head_ip" "$here/mlflow_server.sh" start
mkdir -p ~/.tm23-sweep
printf 'http://%s:%s\n' "$head_ip" "${TM23_MLFLOW_PORT:-5000}" >~/.tm23-sweep/tracking-uri
echo "[head] Ray at $head_ip:6379, MLflow at http://$head_ip:${TM23_MLFLOW_PORT:-5000}"
