"""``tm23-sweep tracking migrate``: a real sqlite sweep store moved into a real PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sweep.cli", *args], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)})


def _make_sqlite_store(root: Path) -> str:
    """Two sweeps logged the way trials log (TrialRun): params, per-step metrics, tags, one run left open."""
    from sweep.integrations.mlflow import TrialRun, ensure_experiment

    uri = f"sqlite:///{root / 'mlruns.db'}"
    for sweep, n_runs in (("sweep-a", 2), ("sweep-b", 1)):
        exp = ensure_experiment(uri, sweep, root / "mlartifacts")
        for i in range(n_runs):
            tags = {"sweep": sweep, "model": "flare", "element": "Cu", "task": "forces", "trial_id": f"t{i}",
                    "config_hash": f"{sweep}-{i}"}
            run = TrialRun(uri, exp, tags, run_name=f"{sweep}-trial-{i}").start()
            run.log_params({"r_cut": 4.0 + i, "n_max": 6, "kernels": [1, 2]})
            for step in range(5):
                run.log_step(step, {"val_forces_mae": 1.0 / (step + 1 + i), "train_loss": 0.5 * step})
            run.set_tags({"best_step": "4"})
            assert run.close(None if (sweep, i) == ("sweep-a", 1) else "FINISHED", retry_s=5)
    return uri


def _snapshot(uri: str) -> dict:
    """Every experiment, run, param, tag and metric point of a store, in a comparable form."""
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=uri)
    out = {}
    for exp in c.search_experiments():
        runs = {}
        for run in c.search_runs([exp.experiment_id], max_results=1000):
            info = run.info
            history = {key: sorted((m.step, m.value, m.timestamp) for m in c.get_metric_history(info.run_id, key))
                       for key in run.data.metrics}
            runs[info.run_id] = {"name": info.run_name, "status": info.status, "start": info.start_time,
                                 "end": info.end_time, "params": run.data.params, "tags": run.data.tags,
                                 "latest": run.data.metrics, "history": history,
                                 "artifacts": info.artifact_uri}
        out[exp.name] = {"id": exp.experiment_id, "location": exp.artifact_location, "tags": exp.tags,
                         "runs": runs}
    return out


def test_migrate_moves_every_run_param_metric_point_and_tag(postgres, empty_database, tmp_path, monkeypatch):
    monkeypatch.setenv("PGPASSFILE", str(postgres.passfile))  # this process reads the target too
    source = _make_sqlite_store(tmp_path)
    before = _snapshot(source)
    mtime = os.stat(tmp_path / "mlruns.db").st_mtime_ns
    done = _cli("tracking", "migrate", "--from", source, "--to", empty_database, env=postgres.env())
    assert done.returncode == 0, done.stderr
    assert "migrated 3 runs, 9 params, 30 metric points" in done.stdout
    after = _snapshot(empty_database)
    assert after == before
    assert sum(len(r["history"]["val_forces_mae"]) for e in after.values() for r in e["runs"].values()) == 15
    assert {r["status"] for r in after["sweep-a"]["runs"].values()} == {"FINISHED", "RUNNING"}
    assert os.stat(tmp_path / "mlruns.db").st_mtime_ns == mtime  # the source is only read

    # the new store keeps working: a new experiment and run get fresh ids (sequences moved on)
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=empty_database)
    new = c.create_experiment("after-migration")
    assert int(new) > max(int(e["id"]) for e in after.values())
    run = c.create_run(new)
    c.log_metric(run.info.run_id, "m", 1.0, step=0)
    assert [m.value for m in c.get_metric_history(run.info.run_id, "m")] == [1.0]

    # a second migration into the same database is refused, and changes nothing
    again = _cli("tracking", "migrate", "--from", source, "--to", empty_database, env=postgres.env())
    assert again.returncode == 2
    assert again.stderr.strip().splitlines()[-1].startswith("error: --to: experiments: the target already holds")
    assert len(c.search_runs([e["id"] for e in after.values()] + [new])) == 4


@pytest.mark.parametrize("args, expected", [
    (("--from", "sqlite:////nonexistent/mlruns.db", "--to", "postgresql+psycopg://tm23@127.0.0.1:1/x"),
     "error: --from: uri: /nonexistent/mlruns.db: no such sqlite file"),
    (("--from", "mlruns.db", "--to", "postgresql+psycopg://tm23@127.0.0.1:1/x"),
     "error: --from: uri: mlruns.db: not a sqlite:///PATH URI"),
    (("--from", "sqlite:///{db}", "--to", "postgresql+psycopg://tm23:secret@127.0.0.1:1/x"),
     "error: --to: uri: a password in the URI"),
    (("--from", "sqlite:///{db}", "--to", "mysql://u@h/x"), "error: --to: uri: mysql://u@h/x: not a postgresql"),
])
def test_bad_input_is_one_line(args, expected, tmp_path):
    db = tmp_path / "m.db"
    db.write_bytes(b"")
    done = _cli("tracking", "migrate", *(a.format(db=db) for a in args), env=dict(os.environ))
    assert done.returncode == 2 and done.stderr.strip().startswith(expected), done.stderr
    assert "secret" not in done.stderr


def test_unreachable_target_is_one_line(tmp_path):
    source = _make_sqlite_store(tmp_path)
    from tests.tracking.conftest import free_port

    done = _cli("tracking", "migrate", "--from", source, "--to", f"postgresql+psycopg://tm23@127.0.0.1:{free_port()}/x",
                env=dict(os.environ))
    assert done.returncode == 2 and "cannot connect" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_postgres_sh_password_file_and_binding(postgres, tmp_path):
    import psycopg

    assert postgres.uri == f"postgresql+psycopg://tm23@127.0.0.1:{postgres.port}/tm23_mlflow"
    assert postgres.passfile.stat().st_mode & 0o777 == 0o600
    dsn = f"host=127.0.0.1 port={postgres.port} dbname=tm23_mlflow user=tm23"
    with psycopg.connect(dsn, passfile=str(postgres.passfile)) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("tm23",)
    empty = tmp_path / "empty-pgpass"
    empty.write_text("")
    empty.chmod(0o600)
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(dsn, passfile=str(empty), connect_timeout=10).close()
    again = postgres.run("start")  # idempotent: same URI, same password
    assert again.returncode == 0 and again.stdout.strip() == postgres.uri and "already running" in again.stderr
    for bad in ("0.0.0.0", "*", "::"):
        refused = postgres.run("start", "--host", bad)
        assert refused.returncode == 2 and "refusing to bind" in refused.stderr
