#!/usr/bin/env bash
# Mount the sweep's storage root, an NFS export (AWS EFS, GCP Filestore, an on-prem NFS server),
# at the same path on every node; setup_commands of cluster-aws.yaml and cluster-gcp.yaml run it.
# Sweep state needs a POSIX shared filesystem (README, "Where sweep state lives"); object stores
# are refused as storage roots.
#
#   mount_shared.sh SERVER:/EXPORT MOUNTPOINT [efs|filestore|nfs]
#
# Safe to run again: a mount point that already holds SERVER:/EXPORT is left as it is; one that
# holds anything else is refused. After mounting, the login user owns MOUNTPOINT/runs and
# MOUNTPOINT/store (made if absent), and a probe file is written and removed there.
set -euo pipefail
(( $# >= 2 && $# <= 3 )) || { echo "usage: $0 SERVER:/EXPORT MOUNTPOINT [efs|filestore|nfs]" >&2; exit 2; }
source=$1
target=$2
kind=${3:-nfs}
[[ $source =~ ^[A-Za-z0-9.-]+:/[A-Za-z0-9._/-]*$ ]] || { echo "[shared] $source: not SERVER:/EXPORT" >&2; exit 2; }
[[ $source != *EDIT* ]] || { echo "[shared] $source: put your file system's address in the cluster file (the EDIT placeholder)" >&2; exit 2; }
[[ $target == /* ]] || { echo "[shared] $target: the mount point must be an absolute path" >&2; exit 2; }
case $kind in
  # AWS's recommended options for EFS (NFS 4.1); Google's for Filestore (NFS 3)
  efs) options=nfsvers=4.1,rsize=1048576,wsize=1048576,hard,timeo=600,retrans=2,noresvport; fstype=nfs4 ;;
  filestore) options=nfsvers=3,rsize=1048576,wsize=1048576,hard,timeo=600,retrans=3; fstype=nfs ;;
  nfs) options=hard,timeo=600,retrans=3; fstype=nfs ;;
  *) echo "[shared] kind must be efs, filestore or nfs, not $kind" >&2; exit 2 ;;
esac
sudo=()
(( EUID == 0 )) || sudo=(sudo)

current=$(findmnt -n -o SOURCE --target "$target" 2>/dev/null || true)
if [[ $(findmnt -n -o TARGET --target "$target" 2>/dev/null || true) == "$target" ]]; then
  [[ $current == "${source%/}" || $current == "$source" ]] \
    || { echo "[shared] $target already holds $current, not $source" >&2; exit 1; }
  echo "[shared] $source already mounted at $target"
else
  command -v mount.nfs >/dev/null || { echo "[shared] mount.nfs missing (apt-get install nfs-common)" >&2; exit 1; }
  "${sudo[@]}" mkdir -p "$target"
  "${sudo[@]}" mount -t "$fstype" -o "$options" "$source" "$target"
  echo "[shared] mounted $source at $target ($kind)"
fi
"${sudo[@]}" mkdir -p "$target/runs" "$target/store"
"${sudo[@]}" chown "$(id -u):$(id -g)" "$target/runs" "$target/store"
probe="$target/runs/.probe-$(hostname)-$$"
echo ok >"$probe" && rm -f "$probe" || { echo "[shared] cannot write $target/runs" >&2; exit 1; }
