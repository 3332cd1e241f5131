#!/usr/bin/env bash
# One-time preparation for `ray up cluster.yaml` with the default local provider (this machine
# as the head, reached over ssh to 127.0.0.1). Safe to run again.
#  1. ~/.ssh/tm23_sweep_ed25519: an ed25519 key made here (never part of the repository),
#     authorized in ~/.ssh/authorized_keys for logins from 127.0.0.1 / ::1 only.
#  2. ~/.tm23-sweep/project -> this checkout: cluster.yaml reaches .venv/bin/ray and these
#     scripts through it, since Ray's YAML has no variables to name the checkout.
#  3. Checks rsync, the venv's ray, and that ssh to root@127.0.0.1 with the key works.
#     With --start-sshd, starts /usr/sbin/sshd bound to 127.0.0.1 if nothing listens on port 22.
set -euo pipefail
here=$(dirname "$(readlink -f "$0")")
project=$(cd "$here/../.." && pwd)
key=~/.ssh/tm23_sweep_ed25519
start_sshd=0
for arg in "$@"; do
  case $arg in
    --start-sshd) start_sshd=1 ;;
    *) echo "usage: $0 [--start-sshd]" >&2; exit 2 ;;
  esac
done

fail() { echo "[prepare] error: $*" >&2; exit 1; }

[[ -x $project/.venv/bin/ray ]] || fail "$project/.venv/bin/ray missing: run 'make setup' first"
command -v rsync >/dev/null || fail "rsync missing (apt-get install rsync; listed in setup/apt-packages.txt)"
[[ -x /usr/sbin/sshd ]] || fail "sshd missing (apt-get install openssh-server; listed in setup/apt-packages.txt)"

mkdir -p ~/.ssh && chmod 700 ~/.ssh
if [[ ! -f $key ]]; then
  ssh-keygen -q -t ed25519 -N '' -C "tm23-sweep ray up $(hostname)" -f "$key"
  echo "[prepare] made $key"
fi
pub=$(cut -d' ' -f1,2 "$key.pub")
touch ~/.ssh/authorized_keys && chmod 600 ~/.ssh/authorized_keys
if ! grep -qF "$pub" ~/.ssh/authorized_keys; then
  printf 'from="127.0.0.1,::1" %s tm23-sweep\n' "$pub" >>~/.ssh/authorized_keys
  echo "[prepare] authorized $key.pub for ssh from 127.0.0.1"
fi

mkdir -p ~/.tm23-sweep && chmod 700 ~/.tm23-sweep
ln -sfn "$project" ~/.tm23-sweep/project
echo "[prepare] ~/.tm23-sweep/project -> $project"

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
  "$(id -un)@127.0.0.1" true \
  || fail "ssh $(id -un)@127.0.0.1 with $key was refused (sshd must allow this user's key logins)"
echo "[prepare] ssh $(id -un)@127.0.0.1 with $key works; now: ray up cluster.yaml -y"
