"""setup/cluster/slurm/tm23-sweep.sbatch on a real Slurm (Debian's slurm-wlm 22.05, two slurmd nodes here).

Job 1 starts a tiny FLARE sweep on Ray over both nodes, with token auth and the job's own MLflow
server (basic auth, store under the storage root); once a trial has finished and another has
checkpointed, it gets the SIGTERM that ``--signal=B:TERM@...`` sends before a time limit
(``scancel --signal=TERM --batch``: to the batch shell alone). It must stop cleanly (exit 1,
the resume hint); job 2, the same sbatch command, resumes the sweep to the end; the audit then
finds nothing lost, nothing trained again and one closed MLflow run per configuration.
"""

from __future__ import annotations

import random
import re
import time
from pathlib import Path

import psutil
import pytest

from tests.cluster.slurm import NODES, SlurmCluster, missing_programs, ports_free
from tests.faults.sweeps import audit_sweep, progress
from tests.sweeps.conftest import REPO

SCRIPT = REPO / "setup" / "cluster" / "slurm" / "tm23-sweep.sbatch"

#: 4 FLARE trials of 1 CPU, each checkpointed after every block of 4 of its 24 training frames.
SPACE = """
elements: [Cu, Au]
task: full
search: {algorithm: grid}
max_failures: 2
studies:
  - model: flare
    resources: {cpus: 1}
    params:
      r_cut: {grid: [4.0, 4.5]}
      n_max: 4
      l_max: 2
      sparse_per_frame: 6
      block_size: 4
      optimize_every: 4
      maxiter: 50
"""

pytestmark = pytest.mark.skipif(bool(missing_programs()),
                                reason=f"Slurm or munge missing ({', '.join(missing_programs())}): "
                                       "apt-get install -y slurm-wlm munge")


@pytest.fixture
def slurm(tmp_path):
    """A Slurm of two nodes, run by this test; cancelled and stopped at the end."""
    if not (REPO / ".venv" / "bin" / "tm23-sweep").exists():
        pytest.skip(f"{REPO / '.venv'} missing: the batch script runs the project's venv (make setup)")
    cluster = SlurmCluster(tmp_path / "slurm")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def _port_base() -> int:
    """A block of Ray ports (GCS, two nodes' ports, their worker ports) that nothing holds now."""
    for _ in range(50):
        base = random.randrange(30, 50) * 1000
        if ports_free([base, *range(base + 10, base + 30), *range(base + 100, base + 300, 7)]):
            return base
    raise RuntimeError("no free block of 1000 ports")


def _leftovers(job_ids: list[str], mlflow_port: int) -> list[str]:
    """Processes of these jobs still alive: Ray (by its temp folder) or the MLflow server (by its port)."""
    marks = [f"/tmp/tm23-ray-{j}-" for j in job_ids] + [f"--port {mlflow_port}"]
    found = []
    for proc in psutil.process_iter():
        try:
            text = " ".join(proc.cmdline())
        except psutil.Error:
            continue
        if any(m in text for m in marks):
            found.append(f"{proc.pid} {text[:140]}")
    return found


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sbatch_sweep_stopped_by_the_time_limit_signal_resumes_in_a_second_job(slurm, tmp_path, sweep_store):
    shared = tmp_path / "shared"  # the "cluster's shared filesystem": every node is this host
    home = tmp_path / "home"      # the user's home of the cluster: Ray token, MLflow credentials
    home.mkdir()
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    name, total = "slurm-sweep", 4
    runs = shared / "runs"
    mlflow_port = random.randrange(15000, 16000)
    env = {"HOME": str(home), "TM23_STORAGE_ROOT": str(shared), "TM23_MLFLOW_PORT": str(mlflow_port),
           "TM23_PORT_BASE": str(_port_base())}
    for var in ("MLFLOW_TRACKING_URI", "TM23_RUNS_DIR", "RAY_ADDRESS"):
        env[var] = None
    submit = ("--nodes=2", "--cpus-per-task=1")

    # job 1: a new sweep, stopped by the time-limit signal once a trial is done and another checkpointed
    out1 = tmp_path / "job-1.out"
    job1 = slurm.sbatch(*submit, f"--output={out1}", str(SCRIPT), name, str(space), sweep_store, env=env, cwd=REPO)
    deadline = time.monotonic() + 300
    while True:
        state = slurm.job(job1)["JobState"]
        p = progress(runs / name)
        if p["ledger"] >= 1 and p["start"] > p["end"] and p["checkpoint"] > 0:
            break
        assert state in ("PENDING", "RUNNING"), f"job 1 ended ({state}) before the signal:\n{_text(out1)}"
        assert time.monotonic() < deadline, f"job 1 made no progress in 300 s:\n{_text(out1)}"
        time.sleep(0.2)
    slurm.scancel("--signal=TERM", "--batch", job1)
    record1 = slurm.wait_job(job1, timeout=180)
    text1 = _text(out1)
    assert record1["ExitCode"] == "1:0", (record1, text1)
    assert re.search(rf"\] Ray up: {len(NODES)} nodes, 2 CPUs", text1), text1
    assert "auth basic" in text1, text1  # the job's MLflow server, off loopback, with basic auth
    assert "stopping the sweep gracefully" in text1 and f"tm23-sweep resume {name}" in text1, text1
    assert "resubmit the same sbatch command to resume it" in text1, text1
    assert progress(runs / name)["ledger"] < total  # stopped mid-sweep

    # job 2: the same command resumes it to the end
    out2 = tmp_path / "job-2.out"
    job2 = slurm.sbatch(*submit, f"--output={out2}", str(SCRIPT), name, str(space), sweep_store, env=env, cwd=REPO)
    record2 = slurm.wait_job(job2, timeout=360)
    text2 = _text(out2)
    assert record2["ExitCode"] == "0:0", (record2, text2)
    assert re.search(rf"tm23-sweep resume {name} --runs-dir \S+ --address \S+", text2), text2
    assert f"sweep {name} complete" in text2, text2

    # the server is gone with the job: read its backend store, which lives under the storage root
    audit = audit_sweep(runs, name, total, tracking_uri=f"sqlite:///{shared / 'mlflow' / 'mlruns.db'}")
    assert (audit.lost, audit.redone, audit.duplicates, audit.running) == (0, 0, 0, 0), audit
    assert audit.resumed_starts >= 1, audit  # the training stopped by the signal went on from its checkpoint

    # a job whose head has another address than the sweep's MLflow server is refused before any Ray starts
    out3 = tmp_path / "job-3.out"
    job3 = slurm.sbatch(*submit, f"--output={out3}", str(SCRIPT), name, env={**env, "TM23_HEAD_ADDR": "127.0.0.1"},
                        cwd=REPO)
    record3 = slurm.wait_job(job3, timeout=120)
    text3 = _text(out3)
    assert record3["ExitCode"] == "2:0", (record3, text3)
    assert re.search(rf"error: sweep {name} logs to http://\S+, the MLflow server of its first job's head; "
                     r".*--nodelist=n1", text3), text3
    assert "Ray head" not in text3, text3

    # the jobs tore down what they started: Ray, the MLflow server, the nodes' Ray temp folders
    time.sleep(1)
    assert _leftovers([job1, job2, job3], mlflow_port) == []
    assert [p for j in (job1, job2, job3) for p in Path("/tmp").glob(f"tm23-ray-{j}-*")] == []


def _text(path: Path) -> str:
    return path.read_text() if path.exists() else "(no output yet)"
