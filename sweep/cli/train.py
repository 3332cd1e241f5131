"""``tm23-sweep train``: one training of one model outside Ray, for debugging or a single model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from sweep.errors import InputError

console = Console()


def parse_overrides(pairs: list[str], source: str = "--set") -> dict:
    """``["l_max=2", "descriptor=B1"]`` → ``{"l_max": 2, "descriptor": "B1"}`` (values parsed as YAML scalars)."""
    import yaml

    values = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(source, pair, "expected key=value")
        try:
            values[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise InputError(source, key.strip(), f"cannot parse value {raw!r}") from None
    return values


def print_test_table(metrics: dict[str, float], title: str) -> None:
    """The paper's table: MAE, RMSE and % error for energy, forces and stress."""
    from sweep.metrics import LABELS, UNITS

    table = Table("label", "MAE", "RMSE", "% error", "unit", title=title)
    for label in LABELS:
        table.add_row(label, f"{metrics[f'test_{label}_mae']:.3f}", f"{metrics[f'test_{label}_rmse']:.3f}",
                      f"{metrics[f'test_{label}_pct']:.2f}", UNITS[label])
    console.print(table)


def train(
    model: Annotated[str, typer.Argument(help="Model family: flare or nequip.")],
    store: Annotated[str, typer.Option("--store", help="Parquet store (path or URI).")],
    element: Annotated[str, typer.Option("--element", help="Element symbol, e.g. Cu.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder (metrics.json, model, export).")],
    task: Annotated[str, typer.Option(help="full | grid | transfer-warm | transfer-melt | learning-curve:N")] = "grid",
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Hyperparameter override key=value (repeatable).")] = None,
    cpus: Annotated[int, typer.Option(min=1, help="CPUs for this training (FLARE: MPI ranks).")] = 1,
    device: Annotated[Optional[str], typer.Option(help="cpu or cuda (default: GPU when visible).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for the validation carve-out and training.")] = 0,
) -> None:
    """Train one model on one element's task and print its test errors."""
    from sweep.data import FrameStore, parse_task, split_frames
    from sweep.elements import get_element
    from sweep.trainers.base import TrainContext, get_trainer

    try:
        get_element(element)
    except KeyError as exc:
        raise InputError("--element", "element", exc.args[0]) from None
    trainer = get_trainer(model)
    params = trainer.parse_params(parse_overrides(set_ or []), source="--set")
    split = split_frames(FrameStore.open(store), element, parse_task(task, source="--task"), seed=seed)

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from sweep.train import run_training
    from sweep.train.single import claim_out_dir

    claim_out_dir(out)

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[status]}"),
                  TimeElapsedColumn(), console=console, transient=False) as progress:
        bar = progress.add_task(f"{model} {element} {task}", total=None, status=f"{split.counts()}")

        def reporter(step: int, metrics) -> None:
            shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k.startswith("val_forces_mae") or k == "lr")
            progress.update(bar, status=f"step {step}: {shown}")

        result = run_training(model, params.model_dump(), split, out, reporter=reporter,
                              context=TrainContext(device=device, num_cpus=cpus, seed=seed))
        progress.update(bar, total=1, completed=1, status="done")
    print_test_table(result.metrics, f"{model} on {element}, task {task}: test errors ({split.counts()['test']} frames)")
    console.print(f"wrote {out / 'metrics.json'}")
