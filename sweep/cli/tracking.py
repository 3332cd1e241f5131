"""``tm23-sweep tracking migrate``: move a sweep's MLflow store from sqlite to PostgreSQL::

    tm23-sweep tracking migrate --from sqlite:///runs/mlruns.db --to "$(setup/cluster/postgres.sh start)"

The password comes from libpq's password file (``$PGPASSFILE``, else the one postgres.sh
writes, ``~/.tm23-sweep/postgres.pgpass``, else ``~/.pgpass``), never from the URI. Stop the
tracking server of the sqlite store first: what it logs after the snapshot is not moved.
Every row of every MLflow table is copied in one transaction into an empty database.
"""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(help="The MLflow tracking store.", no_args_is_help=True)


@app.command()
def migrate(
    source: Annotated[str, typer.Option("--from", help="The sqlite store, sqlite:///PATH (only read).")],
    target: Annotated[str, typer.Option("--to", help="An empty PostgreSQL database, postgresql+psycopg://USER@HOST:PORT/DB.")],
) -> None:
    """Copy every experiment, run, param, metric point, tag and artifact location into PostgreSQL."""
    from sweep.integrations.migrate import migrate as run_migration

    report = run_migration(source, target, progress=lambda line: typer.echo(f"[migrate] {line}", err=True))
    runs, points = report.rows.get("runs", 0), report.rows.get("metrics", 0)
    typer.echo(f"migrated {runs} runs, {report.rows.get('params', 0)} params, {points} metric points, "
               f"{report.rows.get('tags', 0)} tags ({report.total} rows in {len(report.rows)} tables, "
               f"schema {report.revision}); point the MLflow server at the new store with "
               "TM23_MLFLOW_BACKEND=postgres setup/cluster/mlflow_server.sh start")
