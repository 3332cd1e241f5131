"""Inject faults and print one line per kind, measured: ``<kind>: injected N, survived N, trials lost 0, ...``.

    python benchmarks/faults.py [--quick | --full] [--only KIND ...] [--kills N]

Kinds, each on a small real sweep (FLARE on EMT-labelled Cu and Au, 2 CPUs):

* bad input: the corpus of tests/faults/corpus.py (archive files, space YAML, CLI) and the second one of
  tests/faults/corpus_second.py (stores, sweep state, tracking server, full disks, user folders), plus
  two ``run`` drivers racing on one name and a sweep stopped by SIGINT and by SIGTERM;
* interrupted write: ingest, ledger, export and report SIGKILLed mid-write;
* driver SIGKILL: seeded moments cycling through scheduling, mid-trial, checkpoint, MLflow
  logging and just after a trial ends, each followed by a resume (--full: 12 kills on 24 trials);
* trial worker SIGKILL: Tune's FailureConfig restarts the trial from its checkpoint;
* node lost: a worker node of a ``ray.cluster_utils.Cluster`` dies mid-trial;
* MLflow unreachable: the tracking server is stopped mid-sweep and started again
  (--full adds an outage longer than a trial's 60 s retry, which goes through the saved
  operations that the driver replays).

"lost" counts configurations without a finished ledger record; "redone" those trained
again after their training had ended; "duplicate runs" MLflow runs beyond one per
configuration plus runs left RUNNING. A fault survived is one after which all three are 0
(for interrupted writes: the old or the new version is visible, never a half-written one).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tests.faults

from tests.conftest import make_sweep_store, write_emt_archive  # noqa: E402
from tests.faults.corpus import try_all  # noqa: E402
from tests.faults.corpus_second import race_two_runs, try_second  # noqa: E402
from tests.faults.signals import stop_and_resume  # noqa: E402
from tests.faults.driver_kills import MOMENTS, run_driver_kills  # noqa: E402
from tests.faults.interrupted import run_kills  # noqa: E402
from tests.faults.mlflow_outage import run_mlflow_outage  # noqa: E402
from tests.faults.node_loss import run_node_loss  # noqa: E402
from tests.faults.sweeps import FLARE_STEPS, FaultTally  # noqa: E402
from tests.faults.worker_kills import run_worker_kills  # noqa: E402

KINDS = ("bad-input", "interrupted-write", "driver", "worker", "node", "mlflow")


def bad_inputs(root: Path, store: str) -> tuple[list[str], bool]:
    """Both corpora, the race and the signals: ``bad inputs tried N, clear errors N, nothing lost`` and the unclear ones."""
    first, second = try_all(root), try_second(root)
    race = race_two_runs(root / "race", store)
    signals = stop_and_resume(root / "signals", store)
    outcomes = first + second + [race]
    unclear = [f"{o.case.kind}/{o.case.name}: {'; '.join(o.problems)[:160]}" for o in outcomes if not o.clear]
    unclear += [f"signal/{sig}: exit {signals.exits.get(sig)}, strays {signals.strays.get(sig)}"
                for sig in ("SIGINT", "SIGTERM") if not signals.clean(sig)]
    tried = len(outcomes) + 2
    audit = signals.audit
    lost = audit.lost + audit.redone + audit.duplicates if audit else 1
    lines = [f"bad inputs tried {tried}, clear errors {tried - len(unclear)}, "
             f"{'nothing lost' if lost == 0 else f'LOST OR REDONE {lost}'} (first corpus {len(first)}, second "
             f"{len(second) + 3})"]
    lines += [f"  unclear: {u}" for u in unclear]
    return lines, not unclear and lost == 0


def interrupted_writes(root: Path, kills: int) -> tuple[list[str], bool]:
    """Ingest, ledger, export and report writers killed ``kills`` times each."""
    sources = [str(write_emt_archive(root / "a", elements=("Cu",), frames_per_temperature=10)),
               str(write_emt_archive(root / "b", elements=("Cu", "Au"), frames_per_temperature=20, seed=5))]
    lines, ok = [], True
    for kind in ("ingest", "ledger", "export", "report"):
        result = run_kills(kind, root / "w" / kind, sources, kills=kills, seed=sum(map(ord, kind)), max_wait_s=2.5)
        broken = sum(1 for s in result["seen"] if str(s).startswith("broken"))
        ok &= broken == 0
        lines.append(f"interrupted write ({kind}): injected {result['injected']}, survived {result['survived']}, "
                     f"half-written {broken}, trials lost 0, trials redone 0, duplicate runs 0")
    return lines, ok


def driver_kills(root: Path, store: str, full: bool) -> tuple[list[str], bool]:
    """Seeded driver SIGKILLs, each followed by a resume."""
    tally = FaultTally("driver SIGKILL")
    loop = run_driver_kills(root, store, kills=12 if full else len(MOMENTS), seed=20240316,
                            zetas=(1, 2) if full else (2,))
    tally.injected = loop.injected  # one audit at the end covers every kill of the loop
    audit = loop.audit
    tally.survived = tally.injected if audit.clean and loop.final_exit == 0 else 0
    tally.lost, tally.redone, tally.duplicates = audit.lost, audit.redone, audit.duplicates
    phases = ", ".join(f"{m[0]} {sum(1 for k in loop.kills if k['phase'] == m[0])}" for m in MOMENTS)
    return [tally.line(), f"  phases hit: {phases}; trainings resumed from a checkpoint {audit.resumed_starts}"], \
        audit.clean


def worker_kills(root: Path, store: str, full: bool) -> tuple[list[str], bool]:
    """Trial workers SIGKILLed mid-training; Tune restarts them."""
    tally = FaultTally("trial worker SIGKILL")
    result = run_worker_kills(root, store, kills=4 if full else 2, seed=7)
    resumed = sum(1 for o in result.outcomes if len(o["starts"]) > 1 and o["starts"][-1]["resumed_from_checkpoint"])
    tally.injected = len(result.kills)
    tally.survived = resumed if result.audit.clean and result.exit_code == 0 else 0
    tally.lost, tally.redone, tally.duplicates = result.audit.lost, result.audit.redone, result.audit.duplicates
    return [tally.line(), f"  restarted from the checkpoint {resumed} of {len(result.kills)}; "
                          f"frame blocks trained twice {result.blocks_redone}"], \
        result.audit.clean and result.blocks_redone == 0


def node_losses(root: Path, store: str, full: bool) -> tuple[list[str], bool]:
    """Worker nodes of a local Ray cluster killed mid-trial."""
    tally = FaultTally("node lost")
    ok = True
    for i in range(2 if full else 1):
        audit, seen = run_node_loss(root / f"n{i}", store, workers=2)
        removed = seen.get("removed") or {}
        resumed = len(removed.get("starts", [])) == 2 and removed["starts"][-1]["resumed_from_checkpoint"]
        tally.add(audit, survived=bool(removed) and seen["complete"] and resumed)
        ok &= audit.clean and seen["complete"]
    return [tally.line()], ok


def mlflow_outages(root: Path, store: str, full: bool) -> tuple[list[str], bool]:
    """The tracking server stopped mid-sweep and started again."""
    tally = FaultTally("MLflow unreachable")
    lines, ok = [], True
    for i, outage_s in enumerate((20.0, 90.0) if full else (20.0,)):
        outage = run_mlflow_outage(root / f"m{i}", store, outage_s=outage_s)
        complete = all(steps == FLARE_STEPS for steps in outage.histories.values())
        missing = outage.audit.total - len(outage.histories)
        survived = outage.exit_code == 0 and complete and missing == 0 and outage.pending_left == 0
        tally.add(outage.audit, survived=survived)
        ok &= survived and outage.audit.clean
        lines.append(f"  outage {outage.down_s:.0f} s: trainings ended meanwhile {outage.during['end']}, "
                     f"metric histories complete {len(outage.histories) - missing}/{outage.audit.total}, "
                     f"operations left unsent {outage.pending_left}")
    return [tally.line(), *lines], ok


def main() -> int:
    """Run the chosen fault kinds and print their lines; exit 1 if any fault was not survived."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a few faults per kind (default; < 10 min on 2 CPUs)")
    size.add_argument("--full", action="store_true", help="the long random-kill loop and longer outages")
    parser.add_argument("--only", nargs="+", choices=KINDS, help="run only these kinds")
    parser.add_argument("--kills", type=int, default=None, help="interrupted writes per writer (quick 4, full 12)")
    args = parser.parse_args()
    chosen = args.only or KINDS
    started = time.time()
    lines: list[str] = []
    ok = True
    with tempfile.TemporaryDirectory(prefix="tm23-faults-") as scratch:
        root = Path(scratch)
        store = make_sweep_store(root / "store") if set(chosen) - {"interrupted-write"} else ""
        for kind in chosen:
            t0 = time.time()
            if kind == "bad-input":
                out, good = bad_inputs(root / "bad", store)
            elif kind == "interrupted-write":
                out, good = interrupted_writes(root / "writes", kills=args.kills or (12 if args.full else 4))
            elif kind == "driver":
                out, good = driver_kills(root / "driver", store, args.full)
            elif kind == "worker":
                out, good = worker_kills(root / "worker", store, args.full)
            elif kind == "node":
                out, good = node_losses(root / "node", store, args.full)
            else:
                out, good = mlflow_outages(root / "mlflow", store, args.full)
            ok &= good
            out[0] += f"  [{time.time() - t0:.0f} s]"
            for line in out:
                print(line, flush=True)
            lines += out
    print(f"wall {time.time() - started:.0f} s")
    print("every fault survived" if ok else "SOME FAULT NOT SURVIVED")
    for line in lines:  # the figures again, last, for anyone reading the tail
        if not line.startswith("  "):
            print(line.split("  [")[0])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
