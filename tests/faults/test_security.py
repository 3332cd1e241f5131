"""Security defaults: what the project opens listens on loopback; no unsafe unpickling of user files."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SWEEP = REPO / "sweep"
#: pickle.load(s) of files the project writes itself in its own work folders (never the store or user paths).
OWN_PICKLES = {"sweep/tune/search.py", "sweep/trainers/flare/worker.py"}
#: Loaders that run code from the files they read (Tune unpickles ``tuner.pkl``; nequip's
#: ``load_saved_model`` builds whatever a checkpoint's ``_target_`` names), and the only modules
#: allowed to call them: the runner on a sweep folder under the storage root (a plain name), the
#: NequIP trainer on its own checkpoint and on an export folder the user names.
CODE_LOADERS = {r"Tuner\.restore\(": {"sweep/tune/runner.py"},
                r"\bload_saved_model\(": {"sweep/trainers/nequip/trainer.py"}}


def listening_sockets(pid: int) -> set[tuple[str, int]]:
    """(address, port) of the listening TCP sockets that ``pid`` holds, read in its own network namespace."""
    inodes = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            target = str(fd.readlink()) if fd.is_symlink() else ""
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        return set()
    out = set()
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                raw = bytes.fromhex(fields[1].split(":")[0])
                words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                out.add((socket.inet_ntop(family, words), int(fields[1].split(":")[1], 16)))
    return out


def interfaces(pid: int) -> set[str]:
    """Network interfaces of ``pid``'s network namespace."""
    lines = Path(f"/proc/{pid}/net/dev").read_text().splitlines()[2:]
    return {line.split(":")[0].strip() for line in lines}


TINY_SPACE = """
elements: [Cu]
task: grid
search: {algorithm: grid}
studies:
  - model: flare
    resources: {cpus: 1}
    params: {r_cut: {grid: [3.5, 4.0]}, n_max: 2, l_max: 1, sparse_per_frame: 2, block_size: 12, maxiter: 10}
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="a loopback-only namespace needs root; elsewhere token auth guards")
def test_a_default_run_listens_on_loopback_only_with_token_auth(tmp_path, sweep_store):
    import psutil

    from tests.sweeps.conftest import cli_command, cli_env

    (tmp_path / "space.yaml").write_text(TINY_SPACE)
    driver = subprocess.Popen(cli_command("run", str(tmp_path / "space.yaml"), "--store", sweep_store, "--runs-dir",
                                          str(tmp_path / "runs"), "--no-live"),
                              env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: dict[int, tuple[str, set, set]] = {}
    gcs = None
    try:
        deadline = time.monotonic() + 240
        while driver.poll() is None and time.monotonic() < deadline:
            try:
                family = psutil.Process(driver.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                break
            for proc in family:
                try:
                    name = proc.name()
                except psutil.Error:
                    continue
                sockets = listening_sockets(proc.pid)
                if sockets:
                    seen[proc.pid] = (name, sockets, interfaces(proc.pid))
                if name == "gcs_server" and gcs is None and sockets:
                    # token auth: a client without the token is refused, from inside the namespace
                    port = next(p for _, p in sockets)
                    probe = subprocess.run(["nsenter", "-t", str(proc.pid), "-n", str(REPO / ".venv/bin/ray"),
                                            "status", "--address", f"127.0.0.1:{port}"],
                                           env={"PATH": os.environ["PATH"], "HOME": str(tmp_path),
                                                "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64},
                                           capture_output=True, text=True, timeout=60)
                    gcs = probe
            time.sleep(0.2)
        output = driver.communicate(timeout=300)[0]
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, output[-3000:]
    names = {name for name, _, _ in seen.values()}
    assert {"gcs_server", "raylet"} <= names, seen
    for pid, (name, sockets, ifaces) in seen.items():
        # Ray 2.60 binds `::`; in a namespace whose only interface is loopback, that is loopback only
        assert ifaces == {"lo"}, (name, sockets, ifaces)
    assert gcs is not None and gcs.returncode != 0 and "InvalidAuthToken" in gcs.stdout + gcs.stderr, gcs


def test_torch_load_is_weights_only_and_no_user_file_is_unpickled():
    calls, pickles = [], []
    for path in SWEEP.rglob("*.py"):
        text = path.read_text()
        rel = str(path.relative_to(SWEEP.parent))
        for match in re.finditer(r"torch\.load\(([^)]*)\)", text):
            calls.append((rel, match.group(1)))
        if re.search(r"\b(pickle|cloudpickle|dill|joblib)\.loads?\(", text):
            pickles.append(rel)
    assert calls, "no torch.load found: the pattern is stale"
    assert all("weights_only=True" in args for _, args in calls), calls
    assert set(pickles) <= OWN_PICKLES, pickles


def test_loaders_that_run_code_are_called_only_where_their_files_are_the_projects_own():
    for pattern, allowed in CODE_LOADERS.items():
        callers = {str(p.relative_to(SWEEP.parent)) for p in SWEEP.rglob("*.py") if re.search(pattern, p.read_text())}
        assert callers, f"no call matches {pattern}: the pattern is stale"
        assert callers <= allowed, (pattern, callers - allowed)


def test_resume_never_restores_a_folder_outside_the_storage_root(tmp_path):
    from sweep.errors import InputError
    from sweep.tune.runner import resume_sweep

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "tuner.pkl").write_bytes(b"not ours")
    for name in ("../elsewhere", str(outside)):
        with pytest.raises(InputError) as err:
            resume_sweep(name, runs_dir=tmp_path / "root")
        assert "name" in err.value.line()
