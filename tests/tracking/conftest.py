"""A real PostgreSQL server (Debian's), started by setup/cluster/postgres.sh for the tests of this folder."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
POSTGRES_SH = ROOT / "setup" / "cluster" / "postgres.sh"


@dataclass
class Postgres:
    """A running server: its data folder, port, password file and backend URI."""

    data: Path
    port: int
    passfile: Path
    uri: str

    def env(self) -> dict[str, str]:
        """The environment of a client that logs in with the generated password."""
        return {**os.environ, "PGPASSFILE": str(self.passfile)}

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        """``postgres.sh ARGS`` against this server."""
        return subprocess.run([str(POSTGRES_SH), *args, "--data", str(self.data), "--port", str(self.port)],
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, "TM23_PG_PASSFILE": str(self.passfile), **env})


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres():
    """PostgreSQL on 127.0.0.1 with a fresh data folder; as root the server runs as `postgres`."""
    if not list(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl")):
        pytest.fail("Debian's postgresql is missing (setup/system-packages.toml lists it)")
    # under /tmp, not pytest's tmp_path (mode 700): the `postgres` user must reach it when we are root
    root = Path(tempfile.mkdtemp(prefix="tm23-pg-test-"))
    root.chmod(0o755)
    server = Postgres(root / "data", free_port(), root / "secret" / "pgpass", "")
    started = server.run("start")
    assert started.returncode == 0, started.stderr
    server.uri = started.stdout.strip()
    try:
        yield server
    finally:
        server.run("stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def empty_database(postgres, request):
    """A new empty database owned by the role `tm23`; its URI (no password in it)."""
    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:40]
    psql = [f"{sorted(Path('/usr/lib/postgresql').glob('*/bin'))[-1]}/psql", "-h", str(postgres.data),
            "-p", str(postgres.port), "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-qAtX"]
    if os.geteuid() == 0:
        psql = ["runuser", "-u", "postgres", "--", *psql]
    subprocess.run(psql, input=f"DROP DATABASE IF EXISTS {name}; CREATE DATABASE {name} OWNER tm23;",
                   text=True, check=True, capture_output=True, timeout=60)
    return postgres.uri.rsplit("/", 1)[0] + "/" + name
