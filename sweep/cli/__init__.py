"""The ``tm23-sweep`` command line (typer + rich).

Every command group lives in its own module and imports heavy libraries lazily,
so that ``tm23-sweep --help`` answers at once. Bad input of any kind ends as one
line on stderr, ``error: <file>: <field>: <reason>``, and exit status 2.
"""

from __future__ import annotations

import errno
import sys

import typer

from sweep.errors import InputError

app = typer.Typer(
    name="tm23-sweep",
    help="The TM23 force-field benchmark as Ray Tune sweeps tracked in MLflow.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register() -> None:
    from sweep.cli import analysis as analysis_cli
    from sweep.cli import data as data_cli
    from sweep.cli import demo as demo_cli
    from sweep.cli import phonons as phonons_cli
    from sweep.cli import pipeline as pipeline_cli
    from sweep.cli import status as status_cli
    from sweep.cli import sweeps as sweeps_cli
    from sweep.cli import tracking as tracking_cli
    from sweep.cli import train as train_cli

    app.add_typer(data_cli.app, name="data")
    app.command(name="train")(train_cli.train)
    app.add_typer(sweeps_cli.app)  # run, resume, ui
    app.command(name="pipeline")(pipeline_cli.pipeline)
    app.command(name="ls")(status_cli.ls)
    app.command(name="status")(status_cli.status)
    app.add_typer(analysis_cli.app)  # exponents, export, report
    app.command(name="demo")(demo_cli.demo)
    app.command(name="phonons")(phonons_cli.phonons)
    app.add_typer(tracking_cli.app, name="tracking")  # tracking migrate


_register()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tm23-sweep`` console script."""
    try:
        # outside standalone mode click returns a command's typer.Exit code instead of raising it
        code = app(args=argv, standalone_mode=False)
        if isinstance(code, int) and code:
            return code
    except InputError as exc:
        print(f"error: {exc.line()}", file=sys.stderr)
        return 2
    except (typer.Exit, SystemExit) as exc:  # typer.Exit from commands, SystemExit from click
        code = getattr(exc, "exit_code", getattr(exc, "code", 0))
        return int(code or 0)
    except typer.Abort:
        print("aborted", file=sys.stderr)
        return 130
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        # a disk that filled up mid-write: every writer cleaned up its temporary file
        print(f"error: {exc.filename or 'disk'}: disk: {exc.strerror} (nothing was half-written; free some space "
              "and run the command again)", file=sys.stderr)
        return 2
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            return exc.exit_code
        raise
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
