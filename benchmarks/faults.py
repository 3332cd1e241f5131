"""Inject faults and print one line per kind, measured: ``<kind>: injected N, survived N, ...``.

    python benchmarks/faults.py [--quick | --full]

Covered so far: bad input (the corpus of tests/faults/corpus.py) and interrupted writes
(ingest, ledger, export and report folders SIGKILLed mid-write, tests/faults/interrupted.py).
Kinds not measured yet are printed as such, never with made-up figures.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tests.faults

from tests.conftest import write_emt_archive  # noqa: E402
from tests.faults.corpus import FULL_CORPUS, try_all  # noqa: E402
from tests.faults.interrupted import run_kills  # noqa: E402

NOT_YET = ("driver SIGKILL", "trial worker SIGKILL", "node lost", "MLflow unreachable")


def main() -> int:
    """Run the fault kinds at the chosen size and print their lines."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a few kills per kind (default)")
    size.add_argument("--full", action="store_true", help="more kills per kind")
    args = parser.parse_args()
    kills = 12 if args.full else 4
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="tm23-faults-") as scratch:
        root = Path(scratch)
        outcomes = try_all(root / "bad")
        unclear = [o for o in outcomes if not o.clear]
        print(f"bad inputs tried {len(outcomes)}, clear errors {len(outcomes) - len(unclear)}", flush=True)
        for o in unclear:
            print(f"  unclear: {o.case.kind}/{o.case.name}: {'; '.join(o.problems)[:160]}")
        sources = [str(write_emt_archive(root / "a", elements=("Cu",), frames_per_temperature=10)),
                   str(write_emt_archive(root / "b", elements=("Cu", "Au"), frames_per_temperature=20, seed=5))]
        for kind in ("ingest", "ledger", "export", "report"):
            result = run_kills(kind, root / "w" / kind, sources, kills=kills, seed=sum(map(ord, kind)), max_wait_s=2.5)
            broken = sum(1 for s in result["seen"] if str(s).startswith("broken"))
            print(f"interrupted write ({kind}): injected {result['injected']}, survived {result['survived']}, "
                  f"half-written {broken}", flush=True)
    for kind in NOT_YET:
        print(f"{kind}: not measured by this script yet")
    print(f"wall {time.time() - started:.0f} s")
    return 0 if not unclear else 1


if __name__ == "__main__":
    sys.exit(main())
