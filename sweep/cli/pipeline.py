"""``tm23-sweep pipeline``: the paper's protocol (grid → best → full, transfer, learning curves)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from sweep.cli.sweeps import Address, Live, NumCpus, RunsDir, _report, console


def pipeline(
    space: Annotated[str, typer.Argument(help="A grid search-space YAML, or a shipped one's name (demo, flare_b2, ...).")],
    store: Annotated[str, typer.Option("--store", help="Frame store (path or pyarrow URI).")],
    name: Annotated[Optional[str], typer.Option("--name", help="Pipeline name (default: the space's file name).")] = None,
    sizes: Annotated[str, typer.Option(help="Learning-curve N, comma-separated (paper: 100..900).")] = "100,300,500,700,900",
    address: Address = None,
    runs_dir: RunsDir = None,
    num_cpus: NumCpus = None,
    live: Live = None,
) -> None:
    """Grid search, then the best configuration per element on full, transfer and learning-curve tasks."""
    from sweep.errors import InputError
    from sweep.tune.pipeline import run_pipeline

    try:
        ns = [int(n) for n in sizes.split(",") if n.strip()]
    except ValueError:
        raise InputError("--sizes", "sizes", f"expected comma-separated integers, got {sizes!r}") from None
    summary = run_pipeline(space, store, name=name, runs_dir=runs_dir, address=address, num_cpus=num_cpus,
                           live=live, learning_curve_sizes=ns, loopback_only=True)
    _report(summary.grid)
    if summary.final is None:
        console.print("[yellow]grid stage unfinished: rerun the same command to resume[/yellow]")
        raise typer.Exit(1)
    _report(summary.final)
    console.print(f"best configurations: {', '.join(sorted(summary.best))}; final space {summary.final_space}")
