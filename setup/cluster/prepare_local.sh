#!/usr/bin/env bash
# One-time preparation, on the machine that runs `ray up cluster.yaml`, of what cluster.yaml
# names but cannot hold: keys, secrets and the checkout's path. Safe to run again.
#  1. ~/.ssh/tm23_sweep_ed25519: an ed25519 key made here (never part of the repository),
#     authorized in ~/.ssh/authorized_keys with `restrict,pty` (no forwarding of any kind) for
#     logins from 127.0.0.1 / ::1 and from the addresses of --allow-from only.
#  2. ~/.tm23-sweep/project -> this checkout, and ~/.tm23-sweep/project-path holding its path:
#     `ray up` copies that file to every node, whose setup command links the same path there
#     (the project must sit at the same path on every node: a shared software folder, or a
#     clone at that path on each).
#  3. Ray's auth token, ~/.ray/auth_token (mode 600, never printed), and MLflow's credentials,
#     ~/.mlflow/credentials (mode 600: user tm23 and a random password). `ray up` copies both
#     to every node (file_mounts); the head's MLflow server takes the password as its admin's.
#  4. Checks rsync, the venv's ray, and that ssh to this user@HEAD (cluster.yaml's head_ip,
#     --head, default 127.0.0.1) with the key works. With --start-sshd, starts /usr/sbin/sshd
#     bound to 127.0.0.1 if nothing listens on port 22.
#
#   prepare_local.sh [--start-sshd] [--head ADDR] [--allow-from ADDR[,ADDR...]]
#                                                                   on the machine running `ray up`
#   prepare_local.sh --key-line [--allow-from ADDR[,ADDR...]]       print the authorized_keys line
#                                                                   to append on every worker
set -euo pipefail
here=$(dirname "$(readlink -f "$0")")
project=$(cd "$here/../.." && pwd)
key=~/.ssh/tm23_sweep_ed25519
start_sshd=0
key_line_only=0
allow="127.0.0.1,::1"
head=127.0.0.1
while (($#)); do
  case $1 in
    --start-sshd) start_sshd=1 ;;
    --key-line) key_line_only=1 ;;
    --head) shift; [[ $# -gt 0 && $1 =~ ^[0-9a-zA-Z.:-]+$ ]] || { echo "--head needs an address" >&2; exit 2; }
            head=$1 ;;
    --allow-from) shift; [[ $# -gt 0 && $1 =~ ^[0-9a-fA-F.:/,]+$ ]] || { echo "--allow-from needs addresses" >&2; exit 2; }
                  allow="$allow,$1" ;;
    *) echo "usage: $0 [--start-sshd] [--key-line] [--head ADDR] [--allow-from ADDR,...]" >&2; exit 2 ;;
  esac
  shift
done

fail() { echo "[prepare] error: $*" >&2; exit 1; }

[[ -x $project/.venv/bin/ray ]] || fail "$project/.venv/bin/ray missing: run 'make setup' first"
mkdir -p ~/.ssh && chmod 700 ~/.ssh
if [[ ! -f $key ]]; then
  ssh-keygen -q -t ed25519 -N '' -C "tm23-sweep ray up $(hostname)" -f "$key"
  echo "[prepare] made $key"
fi
pub=$(cut -d' ' -f1,2 "$key.pub")
line="restrict,pty,from=\"$allow\" $pub tm23-sweep"
if (( key_line_only )); then
  printf '%s\n' "$line"
  exit 0
fi
command -v rsync >/dev/null || fail "rsync missing (apt-get install rsync; listed in setup/apt-packages.txt)"
[[ -x /usr/sbin/sshd ]] || fail "sshd missing (apt-get install openssh-server; listed in setup/apt-packages.txt)"

# (re)authorize the key with exactly these options: an older line of the same key is replaced
touch ~/.ssh/authorized_keys && chmod 600 ~/.ssh/authorized_keys
if ! grep -qxF "$line" ~/.ssh/authorized_keys; then
  grep -vF "$pub" ~/.ssh/authorized_keys >~/.ssh/authorized_keys.tmp || true
  printf '%s\n' "$line" >>~/.ssh/authorized_keys.tmp
  chmod 600 ~/.ssh/authorized_keys.tmp && mv ~/.ssh/authorized_keys.tmp ~/.ssh/authorized_keys
  echo "[prepare] authorized $key.pub for ssh from $allow (restrict,pty)"
fi

mkdir -p ~/.tm23-sweep && chmod 700 ~/.tm23-sweep
ln -sfn "$project" ~/.tm23-sweep/project
printf '%s\n' "$project" >~/.tm23-sweep/project-path
echo "[prepare] ~/.tm23-sweep/project -> $project"

"$here/secrets.sh"

# Port 22 (0x0016) listening (state 0A) on 127.0.0.1 or any address, IPv4 or IPv6.
sshd_listening() {
  awk 'NR > 1 && $4 == "0A" && $2 ~ /:0016$/ { found = 1 } END { exit !found }' /proc/net/tcp /proc/net/tcp6
}
if ! sshd_listening; then
  if (( start_sshd )); then
    mkdir -p /run/sshd
    [[ -n $(ls /etc/ssh/ssh_host_*_key 2>/dev/null) ]] || ssh-keygen -A
    /usr/sbin/sshd -o ListenAddress=127.0.0.1
    echo "[prepare] started /usr/sbin/sshd on 127.0.0.1:22"
  else
    fail "no sshd listens on port 22; start it (e.g. 'service ssh start') or rerun with --start-sshd"
  fi
fi
ssh -i "$key" -o BatchMode=yes -o IdentitiesOnly=yes -o StrictHostKeyChecking=no \
  -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ConnectTimeout=10 \
  "$(id -un)@$head" true \
  || fail "ssh $(id -un)@$head with $key was refused (sshd must allow this user's key logins)"
echo "[prepare] ssh $(id -un)@$head with $key works; now: ray up cluster.yaml -y"
