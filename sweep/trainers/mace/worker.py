"""MACE's side of the MACE family: runs in MACE's own interpreter (``.venv-mace``), never in the sweep's.

mace-torch 0.3.16 pins e3nn 0.4.4 and nequip 0.19 needs e3nn 0.6, so MACE trains in a venv of
its own. This file is run there as a script, by path, and imports only the standard library,
numpy, ASE and MACE (not this package)::

    python worker.py train CONFIG.yaml     # mace_run_train --config CONFIG.yaml, then info.json
    python worker.py serve MODEL DEVICE DTYPE   # an ASE calculator over stdin/stdout

``train`` runs MACE's own ``mace.cli.run_train.run`` on the arguments MACE's own parser reads
from the config (exactly what ``mace_run_train --config`` does), then writes ``info.json``
beside the model: its weight count and the last epoch. ``serve`` loads the model into
``mace.calculators.MACECalculator`` and answers one JSON line per frame (numbers, positions,
cell, pbc) with energy, forces and stress (ASE units and sign); it starts with a
``{"ready": ...}`` line. MACE's own output goes to stderr, so that stdout carries only replies.
"""

from __future__ import annotations

import json
import os
import sys


def train(config: str) -> int:
    """Train with MACE's own entry point on ``config``; write ``info.json`` next to the model."""
    from mace.cli.run_train import run
    from mace.tools import build_default_arg_parser

    args = build_default_arg_parser().parse_args(["--config", config])
    run(args)
    model_path = os.path.join(args.model_dir, f"{args.name}.model")
    from mace.calculators import MACECalculator

    calc = MACECalculator(model_paths=model_path, device="cpu", default_dtype=args.default_dtype)
    info = {"n_weights": int(sum(p.numel() for p in calc.models[0].parameters())), "model_file": model_path}
    with open(os.path.join(args.model_dir, "info.json.tmp"), "w") as handle:
        json.dump(info, handle)
    os.replace(os.path.join(args.model_dir, "info.json.tmp"), os.path.join(args.model_dir, "info.json"))
    return 0


def serve(model: str, device: str, dtype: str) -> int:
    """Answer frames on stdin with MACE's predictions on stdout, one JSON line each."""
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything MACE or torch prints (also on import) goes to stderr, not into the replies
    sys.stdout = sys.stderr

    import numpy as np
    from ase import Atoms
    from mace.calculators import MACECalculator

    calc = MACECalculator(model_paths=model, device=device, default_dtype=dtype)
    replies.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        frame = json.loads(line)
        atoms = Atoms(numbers=frame["numbers"], positions=frame["positions"], cell=frame["cell"], pbc=frame["pbc"])
        atoms.calc = calc
        reply = {"energy": float(atoms.get_potential_energy()), "forces": atoms.get_forces().tolist()}
        if all(frame["pbc"]):
            reply["stress"] = np.asarray(atoms.get_stress(voigt=True)).tolist()
        replies.write(json.dumps(reply) + "\n")
    return 0


def main(argv: list[str]) -> int:
    """Dispatch ``train`` or ``serve``."""
    if argv[:1] == ["train"] and len(argv) == 2:
        return train(argv[1])
    if argv[:1] == ["serve"] and len(argv) == 4:
        return serve(*argv[1:])
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
