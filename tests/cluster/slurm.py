"""A real Slurm of the test's own: munged, slurmctld and two slurmd nodes on this machine.

Debian's ``slurm-wlm`` (22.05) runs several slurmd on one host (``slurmd -N NAME``), so the
cluster has nodes ``n1`` and ``n2`` of 2 CPUs each, both on this host's address. Everything
lives in one folder: the munge key and socket, ``slurm.conf``, state, spool and logs; the
daemons listen on free ports and are this object's child processes, ended by :meth:`stop`.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

#: The programs the cluster needs (apt: slurm-wlm, munge).
PROGRAMS = ("munged", "munge", "slurmctld", "slurmd", "sbatch", "scontrol", "scancel", "squeue", "sinfo")

NODES = ("n1", "n2")


def missing_programs() -> list[str]:
    """The programs of :data:`PROGRAMS` not found on PATH (nor in /usr/sbin)."""
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin"
    return [p for p in PROGRAMS if shutil.which(p, path=path) is None]


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def ports_free(ports) -> bool:
    """Whether every one of ``ports`` can be bound now."""
    for port in ports:
        with socket.socket() as s:
            try:
                s.bind(("", port))
            except OSError:
                return False
    return True


def host_address() -> str:
    """This host's address on its default route (a cluster's node address), else loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # UDP: no packet is sent
            return s.getsockname()[0]
        except OSError:
            return "127.0.0.1"


@dataclass
class SlurmCluster:
    """munged, slurmctld and slurmd × :data:`NODES` under ``root``; :meth:`start`, then :meth:`stop`."""

    root: Path
    address: str = field(default_factory=host_address)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        """The cluster's slurm.conf."""
        return self.root / "slurm.conf"

    @property
    def env(self) -> dict:
        """The environment for Slurm's client commands (this cluster's slurm.conf)."""
        path = os.environ.get("PATH", "")
        if "/usr/sbin" not in path.split(os.pathsep):
            path += os.pathsep + "/usr/sbin"
        return {**os.environ, "SLURM_CONF": str(self.conf), "PATH": path}

    def start(self, timeout: float = 180) -> None:
        """Start munged, slurmctld and the slurmd nodes; return once every node is idle."""
        self.root.mkdir(parents=True, exist_ok=True)
        munge = self.root / "munge"
        munge.mkdir(mode=0o700, exist_ok=True)
        key = munge / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        sock = munge / "socket"
        self._spawn("munged", ["munged", "-F", "--force", f"--socket={sock}", f"--key-file={key}",
                               f"--pid-file={munge / 'pid'}", f"--seed-file={munge / 'seed'}",
                               f"--log-file={munge / 'log'}"])
        self._wait(lambda: sock.exists(), timeout, "munged's socket")
        ctld_port, node_ports = free_port(), {n: free_port() for n in NODES}
        for sub in ("state", "spool", "log"):
            (self.root / sub).mkdir(exist_ok=True)
        host = socket.gethostname().split(".")[0]
        nodes = "\n".join(f"NodeName={n} NodeHostname={host} NodeAddr={self.address} Port={p} CPUs=2 "
                          "RealMemory=1000 State=UNKNOWN" for n, p in node_ports.items())
        r = self.root
        self.conf.write_text(f"""\
ClusterName=tm23test
SlurmctldHost={host}({self.address})
SlurmctldPort={ctld_port}
AuthType=auth/munge
AuthInfo=socket={sock}
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool/%n
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.%n.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.%n.log
# no cgroups here: processes are tracked by parentage, tasks are not bound
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MpiDefault=none
SwitchType=switch/none
KillWait=10
MinJobAge=600
# job ids (and so the jobs' Ray temp folders) unlike another test cluster's
FirstJobId={random.randrange(100_000, 900_000)}
{nodes}
PartitionName=debug Nodes={','.join(NODES)} Default=YES MaxTime=INFINITE State=UP
""")
        self._spawn("slurmctld", ["slurmctld", "-D", "-f", str(self.conf)])
        for n in NODES:
            self._spawn(f"slurmd-{n}", ["slurmd", "-D", "-f", str(self.conf), "-N", n])
        self._wait(lambda: self.idle_nodes() == len(NODES), timeout, f"{len(NODES)} idle Slurm nodes")

    def idle_nodes(self) -> int:
        """How many nodes sinfo reports idle."""
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %t"], env=self.env, capture_output=True, text=True)
        return sum(1 for line in out.stdout.splitlines() if line.split()[-1:] == ["idle"])

    def sbatch(self, *args: str, env: dict | None = None, cwd: Path | None = None) -> str:
        """Submit a batch job (``env`` on top of this one; a None value unsets); returns its id."""
        full = {k: v for k, v in {**self.env, **(env or {})}.items() if v is not None}
        out = subprocess.run(["sbatch", "--parsable", *args], env=full, cwd=cwd,
                             capture_output=True, text=True, check=True)
        return out.stdout.strip().split(";")[0]

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` as a dict (JobState, ExitCode, NodeList, ...)."""
        out = subprocess.run(["scontrol", "show", "job", "-o", job_id], env=self.env, capture_output=True,
                             text=True, check=True)
        return dict(item.split("=", 1) for item in out.stdout.split() if "=" in item)

    def wait_job(self, job_id: str, timeout: float) -> dict[str, str]:
        """Wait until the job has ended; returns its record."""
        ended = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")
        self._wait(lambda: self.job(job_id)["JobState"] in ended, timeout, f"the end of job {job_id}")
        return self.job(job_id)

    def scancel(self, *args: str) -> None:
        """``scancel ARGS`` on this cluster."""
        subprocess.run(["scancel", *args], env=self.env, check=True, capture_output=True)

    def stop(self) -> None:
        """Cancel every job, then end the daemons (slurmd, slurmctld, munged), each by its process."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            subprocess.run(["scancel", "--user=root"], env=self.env, capture_output=True)
            time.sleep(1)
        for name in [*(f"slurmd-{n}" for n in NODES), "slurmctld", "munged"]:
            proc = self.procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def log(self, name: str) -> str:
        """A daemon's log (``slurmctld``, ``slurmd.n1``, ...), for failure messages."""
        path = self.root / "log" / f"{name}.log"
        return path.read_text()[-3000:] if path.exists() else ""

    def _spawn(self, name: str, argv: list[str]) -> None:
        out = open(self.root / f"{name}.out", "w")
        self.procs[name] = subprocess.Popen(argv, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        out.close()

    def _wait(self, condition, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    text = (self.root / f"{name}.out").read_text()[-2000:]
                    raise RuntimeError(f"{name} exited ({proc.returncode}) while waiting for {what}: {text}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no {what} within {timeout:.0f} s\n{self.log('slurmctld')}")
            time.sleep(0.5)
