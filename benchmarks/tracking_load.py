"""How much logging one cluster MLflow server takes: sqlite and PostgreSQL backends side by side.

Starts the cluster's own tracking servers (``setup/cluster/mlflow_server.sh``: one worker,
127.0.0.1, no auth) on a sqlite store and on PostgreSQL (``TM23_MLFLOW_BACKEND=postgres``,
``setup/cluster/postgres.sh``), both in a temporary folder. For each client count N it forks N
processes, each one logging as a trial does through ``MlflowClient`` (a run with its tags, the
params in one ``log_batch``, then one ``log_batch`` of per-step metrics after another) for a
fixed time, retrying a failed batch as the trial's queue does. Then every run's metric history
is read back. Prints, per backend and N: sustained metric points written per second, p50 and
p99 latency of a metrics ``log_batch`` until acknowledged (retries included), failed attempts, and metric points lost (acknowledged
but not read back; must be 0)::

    python benchmarks/tracking_load.py            # N = 8, 32, 128; 20 s each
    python benchmarks/tracking_load.py --quick    # N = 4, 8, 16; 8 s each
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVER_SH = ROOT / "setup" / "cluster" / "mlflow_server.sh"
METRIC_KEYS = ("val_forces_mae", "val_energy_mae", "train_loss", "lr")
N_PARAMS = 12
# as sweep/integrations/mlflow.py sets them for trials: the client's own retry loop does the waiting
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # a run link per finished run


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(work: Path, backend: str) -> dict[str, str]:
    """The environment of ``mlflow_server.sh`` for one backend, everything under ``work``."""
    env = {**os.environ, "TM23_MLFLOW_DIR": str(work / backend / "mlflow"), "TM23_STATE_DIR": str(work / backend),
           "TM23_MLFLOW_HOST": "127.0.0.1", "TM23_MLFLOW_PORT": str(free_port()), "TM23_MLFLOW_AUTH": "none",
           "TM23_MLFLOW_BACKEND": backend}
    env.pop("TM23_MLFLOW_BACKEND_URI", None)
    if backend == "postgres":
        env.update(TM23_PG_DIR=str(work / "pgdata"), TM23_PG_PORT=str(free_port()),
                   TM23_PG_PASSFILE=str(work / backend / "pgpass"))
    return env


def start_servers(work: Path, backends: list[str]) -> dict[str, dict[str, str]]:
    """Start one tracking server per backend, all at once (each takes 10-20 s); their environments."""
    envs = {b: server_env(work, b) for b in backends}
    errors: dict[str, str] = {}

    def start(backend: str) -> None:
        done = subprocess.run([str(SERVER_SH), "start"], env=envs[backend], capture_output=True, text=True,
                              timeout=300)
        if done.returncode:
            errors[backend] = (done.stdout + done.stderr).strip()

    threads = [threading.Thread(target=start, args=(b,)) for b in backends]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        stop_servers(envs)
        raise RuntimeError(f"tracking server did not start: {errors}")
    return envs


def stop_servers(envs: dict[str, dict[str, str]]) -> None:
    """Stop every server (and the PostgreSQL that ``mlflow_server.sh`` started)."""
    for env in envs.values():
        subprocess.run([str(SERVER_SH), "stop"], env=env, capture_output=True, text=True, timeout=120)


def url_of(env: dict[str, str]) -> str:
    """The tracking URI of the server run with ``env``."""
    return f"http://127.0.0.1:{env['TM23_MLFLOW_PORT']}"


def _backoff(streak: int) -> float:
    """The wait before the next try after ``streak`` failures in a row: TrialRun's 1, 2, 4 ... 30 s."""
    return min(30.0, 2.0 ** (streak - 1))


def _retry(call, give_up: float, failures: list[int]):
    """``call()`` until it succeeds, waiting as a trial's queue does, counting the failed tries."""
    streak = 0
    while True:
        try:
            return call()
        except Exception:  # noqa: BLE001 (an overloaded server times out: retry)
            failures[0] += 1
            streak += 1
            if time.time() > give_up:
                raise
            time.sleep(_backoff(streak))


def _client_main(url: str, experiment_id: str, index: int, start_at: float, stop_at: float, out: Path) -> None:
    """One trial-like client: run, params, then metric batches until ``stop_at``; results to ``out``."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=url)
    tags = {"sweep": "load", "model": "nequip", "element": "Cu", "task": "forces", "trial_id": f"t{index}",
            "config_hash": f"load-{index}"}
    give_up = stop_at + 60
    setup_failures = [0]
    run = _retry(lambda: c.create_run(experiment_id, tags=tags, run_name=f"load-{index}"), give_up, setup_failures)
    run_id = run.info.run_id
    _retry(lambda: c.log_batch(run_id, params=[Param(f"p{i}", str(i * 0.5)) for i in range(N_PARAMS)],
                               tags=[RunTag("client", str(index))]), give_up, setup_failures)
    while time.time() < start_at:  # every client starts logging at once
        time.sleep(0.01)
    latencies: list[float] = []
    acked: list[int] = []
    failures = setup_failures[0]
    step = 0
    while time.time() < stop_at:
        now = int(time.time() * 1000)
        batch = [Metric(k, 1.0 / (step + 1) + j, now, step) for j, k in enumerate(METRIC_KEYS)]
        t0 = time.perf_counter()  # latency until acknowledged, retries included
        tries = [0]
        try:
            _retry(lambda: c.log_batch(run_id, metrics=batch), give_up, tries)
        except Exception:  # noqa: BLE001 (given up: not acknowledged, so not counted as lost)
            failures += tries[0]
            break
        failures += tries[0]
        latencies.append(time.perf_counter() - t0)
        acked.append(step)
        step += 1
    ended = [0]
    _retry(lambda: c.set_terminated(run_id), give_up, ended)
    out.write_text(json.dumps({"run_id": run_id, "acked": acked, "latencies": latencies, "failures": failures}))


def run_load(url: str, n_clients: int, seconds: float, work: Path, label: str) -> dict:
    """N forked clients against ``url`` for ``seconds``; throughput, latency, failures and losses."""
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=url)
    experiment_id = c.create_experiment(f"{label}-n{n_clients}-{time.time_ns()}")
    outdir = work / "clients" / f"{label}-{n_clients}"
    outdir.mkdir(parents=True)
    ctx = mp.get_context("fork")  # mlflow is imported once here; children share it copy-on-write
    setup_s = 2.0 + 0.1 * n_clients  # runs and params first, then every client starts at once
    start_at = time.time() + setup_s
    stop_at = start_at + seconds
    procs = [ctx.Process(target=_client_main, args=(url, experiment_id, i, start_at, stop_at, outdir / f"{i}.json"))
             for i in range(n_clients)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join(timeout=seconds + setup_s + 300)
    finally:
        for p in procs:  # only on an interrupted run: no client outlives the benchmark
            if p.is_alive():
                p.terminate()
    crashed = sum(1 for p in procs if p.exitcode != 0)
    results = [json.loads(f.read_text()) for f in sorted(outdir.glob("*.json"))]
    latencies = sorted(x for r in results for x in r["latencies"])
    points = sum(len(r["acked"]) for r in results) * len(METRIC_KEYS)
    lost = 0
    for r in results:  # read every acknowledged point back
        want = set(r["acked"])
        for key in METRIC_KEYS:
            found = {m.step for m in c.get_metric_history(r["run_id"], key)}
            lost += len(want - found)
    return {
        "backend": label, "clients": n_clients, "seconds": seconds, "points": points,
        "points_per_s": points / seconds, "batches": len(latencies),
        "p50_ms": 1000 * statistics.median(latencies) if latencies else float("nan"),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else float("nan"),
        "failed_attempts": sum(r["failures"] for r in results), "clients_crashed": crashed + n_clients - len(results),
        "lost": lost,
    }


def table(rows: list[dict]) -> str:
    """The results as a Markdown table, one row per backend and client count."""
    lines = ["| backend | clients | metric points/s | p50 ms | p99 ms | failed attempts | clients crashed | points lost |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['backend']} | {r['clients']} | {r['points_per_s']:.0f} | {r['p50_ms']:.1f} | "
                     f"{r['p99_ms']:.1f} | {r['failed_attempts']} | {r['clients_crashed']} | {r['lost']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 1 if a metric point was lost or a client crashed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 4, 8, 16 for 8 s each")
    parser.add_argument("--clients", help="comma-separated client counts (default 8,32,128)")
    parser.add_argument("--seconds", type=float, help="logging time per setting (default 20)")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    counts = [int(x) for x in (args.clients or ("4,8,16" if args.quick else "8,32,128")).split(",")]
    seconds = args.seconds or (8.0 if args.quick else 20.0)
    backends = args.backends.split(",")
    import mlflow.tracking  # noqa: F401 (imported before forking the clients)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a killed run still stops its servers
    work = Path(tempfile.mkdtemp(prefix="tm23-tracking-load-"))
    work.chmod(0o755)  # run as root, PostgreSQL runs as `postgres` and must reach its data folder
    t0 = time.perf_counter()
    envs = start_servers(work, backends)
    print(f"[load] servers up in {time.perf_counter() - t0:.0f} s: "
          + ", ".join(f"{b} {url_of(e)}" for b, e in envs.items()), flush=True)
    rows = []
    try:
        for n in counts:
            for backend in backends:
                row = run_load(url_of(envs[backend]), n, seconds, work, backend)
                rows.append(row)
                print(f"[load] {backend:8s} N={n:3d}: {row['points_per_s']:7.0f} points/s, p50 {row['p50_ms']:.1f} ms, "
                      f"p99 {row['p99_ms']:.1f} ms, failed {row['failed_attempts']}, crashed {row['clients_crashed']}, "
                      f"lost {row['lost']}", flush=True)
    finally:
        stop_servers(envs)
        shutil.rmtree(work, ignore_errors=True)
    print(f"\ntracking load, {dt.date.today()}, {os.cpu_count()} CPUs, {seconds:g} s per setting, "
          f"{len(METRIC_KEYS)} metrics per log_batch, mlflow server with 1 worker:\n")
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    bad = [r for r in rows if r["lost"] or r["clients_crashed"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
