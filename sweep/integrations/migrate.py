"""Move an MLflow tracking store from sqlite to PostgreSQL, every row of every table.

MLflow 3.17 ships no such tool: ``mlflow db upgrade`` migrates a schema in place,
``mlflow migrate-filestore`` goes from ``file:`` stores to sqlite, and ``mlflow-export-import``
is another package that copies through a tracking server's REST API, run by run. The two
stores share one schema (MLflow's SQLAlchemy models), so this copies table by table:

1. a consistent snapshot of the sqlite file (sqlite's backup API; the source is never
   written), upgraded to MLflow's schema revision if it is older;
2. the target initialised with MLflow's own schema if it has none, and refused unless it
   holds nothing but what initialising puts there (the ``Default`` experiment, the default
   workspace): nothing the user has is overwritten;
3. every table copied in foreign-key order inside one transaction (a failure leaves the
   target as it was), PostgreSQL's sequences moved past the copied ids, and the row counts
   of every table compared.
"""

from __future__ import annotations

import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from sweep.errors import InputError

#: Tables that initialising an empty store fills by itself (MLflow's migrations and store).
_SEEDED = ("experiments", "workspaces")
_CHUNK = 5000
#: Where setup/cluster/postgres.sh keeps the role's password (libpq's password-file format).
DEFAULT_PASSFILE = Path("~/.tm23-sweep/postgres.pgpass")


@dataclass
class MigrationReport:
    """What was copied: rows per table (non-empty ones), and the schema revision."""

    revision: str
    rows: dict[str, int] = field(default_factory=dict)
    upgraded_from: str | None = None

    @property
    def total(self) -> int:
        """Rows copied over all tables."""
        return sum(self.rows.values())


def sqlite_path(uri: str) -> Path:
    """The file of a ``sqlite:///`` URI that exists; a one-line error otherwise."""
    if not uri.startswith("sqlite:///"):
        raise InputError("--from", "uri", f"{uri}: not a sqlite:///PATH URI")
    path = Path(uri[len("sqlite:///"):])
    if not path.is_file():
        raise InputError("--from", "uri", f"{path}: no such sqlite file")
    return path


def check_target(uri: str) -> str:
    """``uri`` if it names a PostgreSQL database (``postgresql[+psycopg]://``), else a one-line error."""
    from sqlalchemy.engine import make_url

    try:
        url = make_url(uri)
    except Exception:  # noqa: BLE001 (SQLAlchemy raises several kinds for a bad URL)
        raise InputError("--to", "uri", f"{uri}: not a database URI") from None
    if url.get_backend_name() != "postgresql" or url.get_driver_name() not in ("psycopg", "psycopg2"):
        raise InputError("--to", "uri", f"{url.render_as_string(hide_password=True)}: not a "
                                        "postgresql+psycopg:// URI")
    if url.password:
        raise InputError("--to", "uri", "a password in the URI would show in the process list; put it in "
                                        "~/.pgpass or the file PGPASSFILE names (setup/cluster/postgres.sh does)")
    return uri


def migrate(source_uri: str, target_uri: str, progress: Callable[[str], None] = lambda _: None) -> MigrationReport:
    """Copy the sqlite store ``source_uri`` into the empty PostgreSQL store ``target_uri``.

    The password comes from libpq's password file: ``$PGPASSFILE``, else the one
    ``setup/cluster/postgres.sh`` writes, else ``~/.pgpass``. What is logged to the source after
    its snapshot is not moved: stop its tracking server first.
    """
    import os

    source = sqlite_path(source_uri)
    check_target(target_uri)
    if "PGPASSFILE" not in os.environ and DEFAULT_PASSFILE.expanduser().is_file():
        os.environ["PGPASSFILE"] = str(DEFAULT_PASSFILE.expanduser())  # postgres.sh's password
    with tempfile.TemporaryDirectory(prefix="tm23-migrate-") as tmp:
        snapshot = Path(tmp) / "snapshot.db"
        _snapshot(source, snapshot)
        return _copy(f"sqlite:///{snapshot}", target_uri, progress)


def _snapshot(source: Path, dest: Path) -> None:
    """A consistent copy of a sqlite file that a server may be writing (sqlite's backup API)."""
    try:
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
        try:
            src.execute("SELECT count(*) FROM alembic_version").fetchone()
            with sqlite3.connect(dest) as out:
                src.backup(out)
        finally:
            src.close()
    except sqlite3.DatabaseError as exc:
        raise InputError(source, "sqlite", f"not an MLflow store ({exc})") from None


def _copy(snapshot_uri: str, target_uri: str, progress: Callable[[str], None]) -> MigrationReport:
    import sqlalchemy as sa
    from mlflow.store.db import utils as db_utils
    from mlflow.store.tracking.dbmodels.models import Base

    head = db_utils._get_latest_schema_revision()
    src_engine = sa.create_engine(snapshot_uri)
    dst_engine = sa.create_engine(target_uri)
    report = MigrationReport(revision=head)
    try:
        found = db_utils._get_schema_version(src_engine)
        if found != head:
            progress(f"source schema {found} is older than MLflow's {head}: upgrading the snapshot")
            db_utils._upgrade_db(src_engine)
            report.upgraded_from = found
        try:
            with dst_engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except sa.exc.OperationalError as exc:
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            raise InputError("--to", "uri", f"{sa.engine.make_url(target_uri).render_as_string()}: "
                                            f"cannot connect ({reason})") from None
        if not sa.inspect(dst_engine).get_table_names():
            progress("initialising the target with MLflow's schema")
            db_utils._initialize_tables(dst_engine)
        if db_utils._get_schema_version(dst_engine) != head:
            raise InputError("--to", "schema", f"the target's MLflow schema is not {head}; "
                                               "give an empty database")
        tables = [t for t in Base.metadata.sorted_tables if t.name != "alembic_version"]
        missing = set(sa.inspect(src_engine).get_table_names()) - {t.name for t in tables} - {"alembic_version"}
        if missing:
            raise InputError("--from", "schema", f"tables this MLflow does not know: {sorted(missing)}")
        with src_engine.connect() as src, dst_engine.begin() as dst:
            _check_fresh(dst, tables)
            for table in reversed(tables):
                if table.name in _SEEDED:
                    dst.execute(table.delete())  # what initialising put there; the source has its own
            for table in tables:
                n = _copy_table(src, dst, table)
                if n:
                    report.rows[table.name] = n
                    progress(f"{table.name}: {n} rows")
            if dst.dialect.name == "postgresql":
                _advance_sequences(dst, tables)
            for table in tables:  # in the same transaction: a mismatch rolls everything back
                want = src.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
                got = dst.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
                if want != got:
                    raise RuntimeError(f"{table.name}: {got} rows copied of {want}")
    finally:
        src_engine.dispose()
        dst_engine.dispose()
    return report


def _check_fresh(dst, tables) -> None:
    """Refuse a target holding anything beyond the ``Default`` experiment and workspace."""
    import sqlalchemy as sa

    for table in tables:
        if table.name == "workspaces":
            continue
        if table.name == "experiments":
            names = [r[0] for r in dst.execute(sa.select(table.c.name))]
            if names and names != ["Default"]:
                raise InputError("--to", "experiments", f"the target already holds {len(names)} experiments "
                                                        "(nothing is overwritten); give an empty database")
            continue
        if dst.execute(sa.select(sa.func.count()).select_from(table)).scalar_one():
            raise InputError("--to", table.name, "the target already holds rows (nothing is overwritten); "
                                                 "give an empty database")


def _copy_table(src, dst, table) -> int:
    import sqlalchemy as sa

    result = src.execution_options(stream_results=True).execute(sa.select(table))
    n = 0
    while rows := result.mappings().fetchmany(_CHUNK):
        dst.execute(table.insert(), [dict(r) for r in rows])
        n += len(rows)
    return n


def _advance_sequences(dst, tables) -> None:
    """Move each serial/identity sequence past the ids copied in explicitly."""
    import sqlalchemy as sa

    for table in tables:
        for column in table.primary_key.columns:
            seq = dst.execute(sa.text("SELECT pg_get_serial_sequence(:t, :c)"),
                              {"t": table.name, "c": column.name}).scalar_one()
            if seq:
                dst.execute(sa.text(f'SELECT setval(:s, COALESCE((SELECT MAX("{column.name}") FROM '
                                    f'"{table.name}"), 0) + 1, false)'), {"s": seq})
