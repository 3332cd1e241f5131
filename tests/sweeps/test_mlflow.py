"""MLflow: one run per configuration, re-attached by tag; nothing lost while the server is down; the UI on loopback."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from sweep.integrations.mlflow import PENDING_FILE, TrialRun, client, ensure_experiment, find_runs, flush_pending
from sweep.tune.trainable import FlushPending
from tests.sweeps.conftest import REPO, cli_command, cli_env

TAGS = {"sweep": "s", "model": "nequip", "element": "Cu", "task": "full", "trial_id": "t1", "config_hash": "h1"}


def test_one_run_per_configuration_reattached_by_tag(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    exp = ensure_experiment(uri, "s", tmp_path / "art")
    assert ensure_experiment(uri, "s", tmp_path / "art") == exp

    first = TrialRun(uri, exp, TAGS, "run-h1").start()
    first.log_params({"l_max": 1, "r_max": 4.0})
    for step in (1, 2, 3):
        first.log_step(step, {"val_forces_mae": 10.0 / step})
    # the driver dies here: the run stays RUNNING with three epochs logged

    again = TrialRun(uri, exp, {**TAGS, "trial_id": "t9"}, "run-h1").start()
    assert again.run_id == first.run_id and again.reattached and again.logged_upto == 3
    for step in (2, 3, 4):  # a resumed trainer reports from its checkpoint on
        again.log_step(step, {"val_forces_mae": 1.0 / step})
    again.log_metrics({"val_forces_mae": 0.25, "test_forces_mae": 9.0}, step=4)  # the final metrics
    (tmp_path / "f.txt").write_text("x")
    again.log_artifacts(tmp_path / "f.txt")
    assert again.close("FINISHED")
    # killed after the final metrics went out, before the ledger: the resumed trial logs them again
    third = TrialRun(uri, exp, {**TAGS, "trial_id": "t9"}, "run-h1").start()
    third.log_metrics({"val_forces_mae": 0.25, "test_forces_mae": 9.0}, step=4)
    assert third.close("FINISHED")
    assert [m.step for m in client(uri).get_metric_history(first.run_id, "test_forces_mae")] == [4]

    runs = find_runs(uri, exp)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.tags["trial_id"] == "t9"
    history = client(uri).get_metric_history(first.run_id, "val_forces_mae")
    assert sorted(m.step for m in history) == [1, 2, 3, 4]  # steps 2, 3 not logged twice
    assert [a.path for a in client(uri).list_artifacts(first.run_id)] == ["f.txt"]
    other = TrialRun(uri, exp, {**TAGS, "config_hash": "h2"}, "run-h2").start()
    assert other.run_id != first.run_id and len(find_runs(uri, exp)) == 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_health(port: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError("mlflow server did not come up")


def _listeners(port: int) -> list[str]:
    """Local addresses listening on ``port`` (IPv4), from /proc/net/tcp."""
    out = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if int(hex_port, 16) == port and state == "0A":  # LISTEN
            out.append(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return out


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[2]) == pgid and stat[0] != "Z":
                members.append(int(entry.name))
    return members


@pytest.mark.timeout(300)
def test_ui_on_localhost_receives_what_was_logged_while_it_was_down(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    db = f"sqlite:///{runs / 'mlruns.db'}"
    exp = ensure_experiment(db, "s", runs / "mlartifacts")
    port = _free_port()
    pending = runs / "s" / "work" / "h1" / PENDING_FILE

    # the tracking server is down: the trial's operations queue, then wait on disk
    down = TrialRun(f"http://127.0.0.1:{port}", exp, TAGS, "run-h1", pending_file=pending).start()
    assert down.run_id is None
    for step in range(1, 6):
        down.log_step(step, {"val_forces_mae": float(step)})
    down.log_params({"l_max": 2})
    assert down.pending == 6
    assert not down.close("FINISHED", retry_s=1.0)
    saved = json.loads(pending.read_text())
    assert [op["op"] for op in saved["ops"]] == ["metrics"] * 5 + ["params", "terminate"]

    ui = subprocess.Popen(cli_command("ui", "--runs-dir", str(runs), "--port", str(port)), cwd=REPO, env=cli_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_health(port)
        assert _listeners(port) == ["127.0.0.1"]  # bound to loopback only
        server_pgid = next(int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()
                           and _ppid(int(p.name)) == ui.pid)
        # the driver's callback replays the saved operations once the server answers
        FlushPending(str(runs / "s"), every_s=0.0).on_step(0, [])
        assert not pending.exists()
        assert flush_pending(runs / "s" / "work", retry_s=30) == (0, 0)  # nothing left to send
    finally:
        ui.send_signal(signal.SIGINT)  # Ctrl-C
        code = ui.wait(timeout=60)
    assert code == 0, ui.stdout.read()
    time.sleep(0.5)
    assert _group_members(server_pgid) == []  # mlflow, uvicorn and huey_consumer all stopped
    assert _listeners(port) == []

    runs_found = find_runs(db, exp)
    assert len(runs_found) == 1 and runs_found[0].info.status == "FINISHED"
    assert runs_found[0].data.params == {"l_max": "2"}
    assert runs_found[0].data.tags["config_hash"] == "h1"
    history = client(db).get_metric_history(runs_found[0].info.run_id, "val_forces_mae")
    assert sorted((m.step, m.value) for m in history) == [(s, float(s)) for s in range(1, 6)]
    assert not pending.exists()


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:
        return -1


def test_ui_command_binds_loopback_with_one_worker(tmp_path, monkeypatch):
    from sweep.cli.sweeps import ui_command
    from sweep.errors import InputError

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    with pytest.raises(InputError, match="no MLflow database yet"):
        ui_command(tmp_path, "127.0.0.1", 5000)
    ensure_experiment(f"sqlite:///{tmp_path / 'mlruns.db'}", "s", tmp_path / "a")
    command = ui_command(tmp_path, "127.0.0.1", 5001)
    assert command[1:4] == ["-m", "mlflow", "ui"]
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert command[command.index("--workers") + 1] == "1"
    assert command[command.index("--backend-store-uri") + 1] == f"sqlite:///{tmp_path / 'mlruns.db'}"
