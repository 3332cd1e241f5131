"""Throwaway Linux namespaces as test machines: one kernel, but nothing node-local shared.

A :class:`Namespace` is a fresh mount, PID, network and UTS namespace (root only):

- its own network with nothing but loopback, or an address on a bridge (:func:`connect`);
- a PID namespace whose first process reaps orphans, so that ending it kills everything in it
  (a node lost, every process at once);
- its own host name;
- an overlay on /root (writes go to a tmpfs that ends with it), private /tmp (a folder of the
  test's), /run, /dev/shm and /mnt;
- optionally the checkout read-only, so that nothing a node does can write into it (the
  checkout sits at the same path on every node, as a shared software folder would).

Commands run inside through ``nsenter``. Nothing is written to the machine's /etc, /root or
/tmp outside the test's folder, and the machine's own network is not touched: a bridge lives
in one namespace (:class:`Switch`), and each node reaches it by a veth pair.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# No venv on PATH: whatever runs inside must find the project's tools on its own.
BASE_ENV = {
    "HOME": "/root",
    "USER": "root",
    "LOGNAME": "root",
    "PATH": SYSTEM_PATH,
    "LANG": "C.UTF-8",
    "CI": "true",
    "RAY_USAGE_STATS_ENABLED": "0",
}
TIMEOUT = 240

# PID 1 of the namespace: reaps orphans (Ray daemonizes its processes) until SIGTERM; when it
# exits, the kernel kills every process left in the namespace.
REAPER = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
print("ready", flush=True)
while True:
    try:
        pid, _ = os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        pid = 0
    if pid == 0:
        time.sleep(0.2)
"""

# Runs as the namespace's first process: $1 work folder, $2 python, $3 reaper, $4 checkout,
# $5 host name, $6 "ro" to make the checkout read-only, $7 "private-tmp" or "shared-tmp".
# /root: an overlay whose writes go to a tmpfs (an upper layer must not be on overlayfs, which
# a container's /tmp may be), with the project's traces from an earlier `ray up` hidden.
NAMESPACE_INIT = r"""
set -eu
w=$1 repo=$4
hostname "$5"
mount -t tmpfs -o mode=0700 tmpfs "$w/home"
mkdir -m 0700 "$w/home/upper" "$w/home/work"
mount -t overlay overlay -o "lowerdir=/root,upperdir=$w/home/upper,workdir=$w/home/work" /root
if [ "$6" = ro ]; then mount --bind "$repo" "$repo" && mount -o remount,bind,ro "$repo"; fi
if [ "$7" = private-tmp ]; then
  # the checkout may itself live under /tmp (a CI clone): keep it visible at the same path
  case "$repo" in /tmp/*) mkdir -p "$w/tmp/${repo#/tmp/}"; mount --rbind "$repo" "$w/tmp/${repo#/tmp/}" ;; esac
  mount --rbind "$w/tmp" /tmp
fi
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -m 0755 /run/sshd
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=0755 tmpfs /mnt
ip link set lo up
rm -rf /root/.ray /root/.tm23-sweep /root/.mlflow /root/tm23-runs /root/ray_bootstrap_config.yaml \
  /root/ray_bootstrap_key.pem /root/.ssh/tm23_sweep_ed25519 /root/.ssh/tm23_sweep_ed25519.pub
exec "$2" -c "$3"
"""

SSHD_CONFIG = """\
Port 22
ListenAddress {address}
HostKey {folder}/ssh_host_ed25519_key
PidFile {folder}/sshd.pid
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes yes
AuthorizedKeysFile .ssh/authorized_keys
PrintMotd no
Subsystem sftp internal-sftp
"""


def die_with_parent() -> None:
    """In the child before exec: SIGKILL when the test process dies, so no namespace outlives it."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def children(pid: int) -> list[int]:
    """Direct children of ``pid``."""
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def listening(net_pid: int) -> list[tuple[str, int, int]]:
    """(address, port, socket inode) of every listening TCP socket in the network namespace of ``net_pid``."""
    found = []
    for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        lines = Path(f"/proc/{net_pid}/net/{name}").read_text().splitlines()[1:]
        for line in lines:
            fields = line.split()
            if fields[3] != "0A":  # TCP_LISTEN
                continue
            hex_addr, hex_port = fields[1].split(":")
            raw = bytes.fromhex(hex_addr)
            # /proc prints each 32-bit word of the address in host (little-endian) order.
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            found.append((socket.inet_ntop(family, raw), int(hex_port, 16), int(fields[9])))
    return found


def requirements_missing(tools: tuple[str, ...] = ()) -> str | None:
    """Why namespaced machines cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (namespaces, sshd, ssh to root)"
    for tool in ("unshare", "nsenter", "ip", "ssh", "ssh-keygen", "rsync", *tools):
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    if not os.access("/usr/sbin/sshd", os.X_OK):
        return "/usr/sbin/sshd not installed (openssh-server, setup/system-packages.toml)"
    if not (VENV_BIN / "ray").exists():
        return f"{VENV_BIN / 'ray'} missing (make setup)"
    probe = subprocess.run(["unshare", "--mount", "--pid", "--net", "--uts", "--fork", "--mount-proc", "true"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot create namespaces here: {probe.stderr.strip()}"
    return None


class Namespace:
    """A test machine: fresh mount, PID, network and UTS namespaces, commands run through nsenter."""

    def __init__(self, workdir: Path, hostname: str = "tm23-node", read_only_checkout: bool = False,
                 private_tmp: bool = True):
        self.workdir = Path(workdir)
        self.hostname = hostname
        for sub in ("home", "tmp"):
            (self.workdir / sub).mkdir(parents=True)
        self.tmp = self.workdir / "tmp" if private_tmp else Path("/tmp")  # /tmp inside, seen from here
        self.address: str | None = None
        self.prepare_output = ""
        self.sshd: subprocess.Popen | None = None
        self.unshare = subprocess.Popen(
            ["unshare", "--mount", "--pid", "--net", "--uts", "--fork", "--mount-proc", "--propagation", "private",
             "--kill-child", "bash", "-c", NAMESPACE_INIT, "init", str(self.workdir), sys.executable, REAPER,
             str(REPO), hostname, "ro" if read_only_checkout else "rw",
             "private-tmp" if private_tmp else "shared-tmp"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=die_with_parent,
        )
        line = self.unshare.stdout.readline()
        if line.strip() != "ready":
            self.unshare.kill()
            raise RuntimeError(f"namespace did not start: {line}{self.unshare.stderr.read()}")
        (self.init_pid,) = children(self.unshare.pid)
        self.pid_ns = os.readlink(f"/proc/{self.init_pid}/ns/pid")
        self.home = Path(f"/proc/{self.init_pid}/root/root")  # /root as seen inside, while it lives

    def argv(self, args) -> list[str]:
        """``args`` run inside this namespace."""
        return ["nsenter", "-t", str(self.init_pid), "-m", "-n", "-p", "-u", "--", *map(str, args)]

    def run(self, args, *, env: dict | None = None, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
        """Run ``args`` inside, from the repository root, with no stdin; output captured as text."""
        return subprocess.run(self.argv(args), cwd=REPO, env={**BASE_ENV, **(env or {})},
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)

    def popen(self, args, *, log: Path, env: dict | None = None) -> subprocess.Popen:
        """Start ``args`` inside, output to ``log``; returns nsenter's process (its child runs ``args``)."""
        with open(log, "wb") as out:
            return subprocess.Popen(self.argv(args), cwd=REPO, env={**BASE_ENV, **(env or {})},
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    preexec_fn=die_with_parent)

    def start_sshd(self, address: str = "127.0.0.1") -> None:
        """sshd on ``address``:22 inside (host key and config in this namespace's /tmp/sshd)."""
        private = self.tmp != Path("/tmp")
        sshd_dir = self.tmp / "sshd" if private else self.workdir / "sshd"
        inside = "/tmp/sshd" if private else str(sshd_dir)
        sshd_dir.mkdir(exist_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(sshd_dir / "ssh_host_ed25519_key")],
                       check=True, stdin=subprocess.DEVNULL)
        (sshd_dir / "sshd_config").write_text(SSHD_CONFIG.format(address=address, folder=inside))
        self.sshd = self.popen(["/usr/sbin/sshd", "-D", "-e", "-f", f"{inside}/sshd_config"], log=sshd_dir / "sshd.log")
        deadline = time.monotonic() + 20
        while not any(port == 22 for _, port, _ in listening(self.init_pid)):
            assert self.sshd.poll() is None and time.monotonic() < deadline, (sshd_dir / "sshd.log").read_text()
            time.sleep(0.1)

    def authorize(self, key_line: str) -> None:
        """Append ``key_line`` to root's authorized_keys inside (what an administrator does once per node)."""
        ssh = self.home / ".ssh"
        ssh.mkdir(mode=0o700, exist_ok=True)
        with open(ssh / "authorized_keys", "a") as fh:
            fh.write(key_line.rstrip("\n") + "\n")
        os.chmod(ssh / "authorized_keys", 0o600)

    def processes(self) -> dict[int, str]:
        """Host PID -> command line of every process inside (PID 1 excluded)."""
        found = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == self.init_pid:
                continue
            try:
                if os.readlink(entry / "ns/pid") != self.pid_ns:
                    continue
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            except OSError:
                continue
        return found

    def owners(self) -> dict[int, str]:
        """Socket inode -> command line of the process inside that holds it."""
        owners = {}
        for pid, cmdline in self.processes().items():
            try:
                fds = list(Path(f"/proc/{pid}/fd").iterdir())
            except OSError:
                continue
            for fd in fds:
                try:
                    target = os.readlink(fd)
                except OSError:
                    continue
                if target.startswith("socket:["):
                    owners[int(target[8:-1])] = f"{pid} {cmdline[:120]}"
        return owners

    def listening(self) -> list[tuple[str, int, str]]:
        """(address, port, owner) of every listening TCP socket inside."""
        owners = self.owners()
        return [(addr, port, owners.get(inode, "?")) for addr, port, inode in listening(self.init_pid)]

    @property
    def alive(self) -> bool:
        """Whether the namespace's first process still runs."""
        return self.unshare.poll() is None

    def kill(self) -> None:
        """Lose the node: SIGKILL its first process, and the kernel kills every process inside."""
        if self.alive:
            os.kill(self.init_pid, signal.SIGKILL)
            self.unshare.wait(timeout=30)

    def close(self) -> None:
        """End the namespace: PID 1 exits and the kernel kills everything left inside."""
        if self.alive:
            os.kill(self.init_pid, signal.SIGTERM)
            try:
                self.unshare.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.unshare.kill()
                self.unshare.wait(timeout=20)
        for pipe in (self.unshare.stdout, self.unshare.stderr):
            if pipe is not None:
                pipe.close()


class Switch:
    """A bridge in a namespace of its own, and veth links from it to nodes: a private subnet."""

    def __init__(self, namespace: Namespace, address: str, prefix: int = 24):
        self.ns = namespace
        self.prefix = prefix
        self._links = 0
        for args in (["ip", "link", "add", "br0", "type", "bridge"],
                     ["ip", "addr", "add", f"{address}/{prefix}", "dev", "br0"],
                     ["ip", "link", "set", "br0", "up"]):
            _check(self.ns.run(args, timeout=30))
        self.ns.address = address

    def connect(self, node: Namespace, address: str) -> None:
        """Give ``node`` an ``eth0`` with ``address`` on this switch's subnet."""
        self._links += 1
        port = f"p{self._links}"
        _check(subprocess.run(["ip", "link", "add", port, "netns", str(self.ns.init_pid), "type", "veth", "peer",
                               "name", "eth0", "netns", str(node.init_pid)], capture_output=True, text=True))
        _check(self.ns.run(["ip", "link", "set", port, "master", "br0", "up"], timeout=30))
        for args in (["ip", "addr", "add", f"{address}/{self.prefix}", "dev", "eth0"],
                     ["ip", "link", "set", "eth0", "up"]):
            _check(node.run(args, timeout=30))
        node.address = address


def _check(done: subprocess.CompletedProcess) -> None:
    assert done.returncode == 0, f"{done.args}: {done.stdout}{done.stderr}"
