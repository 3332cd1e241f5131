"""Which labeller for the embedded mini-TM23: cost, agreement with PBE lattice constants, smoothness.

    python benchmarks/labellers.py [--quick] [--labellers chgnet,sevennet] [--elements Cu,Os,Ti,Au]

For each universal potential whose weights ship in its wheel (CHGNet 0.3.0 in ``chgnet``,
SevenNet-0 in ``sevenn``) and each metal, measured in one run on this machine:

- **cost**: seconds per energy + forces + stress call on the metal's vacancy supercell
  (31-57 atoms), median of three, after a warm-up call, one thread;
- **lattice constant**: the minimum of E(a) over ±4% of the PBE lattice constant (c/a kept),
  as a % deviation from PBE (TM23 used PBE lattice constants, so the labeller's pressure there
  is its disagreement with PBE);
- **smoothness**: the force constant of one atom displaced by 0.01 and by 0.03 Å; their ratio
  is 1 for a smooth, harmonic energy surface.

The classical potentials are measured too, for reference.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def sevennet_calculator(symbol: str):
    """SevenNet-0 (the ``7net-0`` weights in the ``sevenn`` wheel) on the CPU."""
    from sevenn.calculator import SevenNetCalculator

    return SevenNetCalculator("7net-0", device="cpu")


def calculators() -> dict:
    """Name -> calculator factory for every labeller measured."""
    from sweep.data.generate.labellers import get_labeller

    return {"chgnet": get_labeller("chgnet").calculator, "sevennet": sevennet_calculator,
            "classical": get_labeller("classical").calculator}


def cost(calc, atoms, repeats: int = 3) -> float:
    """Median seconds of one energy + forces + stress call."""
    atoms = atoms.copy()
    atoms.calc = calc
    atoms.rattle(0.02, seed=0)
    atoms.get_potential_energy()
    times = []
    for k in range(repeats):
        atoms.rattle(0.01, seed=k + 1)
        t = time.perf_counter()
        atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def lattice_deviation(calc, cell, points: int = 9) -> float:
    """% deviation of the E(a) minimum from the given (PBE) lattice, c/a kept."""
    scales = np.linspace(0.96, 1.04, points)
    energies = []
    for s in scales:
        atoms = cell.copy()
        atoms.set_cell(cell.cell.array * s, scale_atoms=True)
        atoms.calc = calc
        energies.append(atoms.get_potential_energy())
    best = int(np.argmin(energies))
    window = slice(max(0, best - 2), min(points, best + 3))
    c2, c1, _ = np.polyfit(scales[window], np.array(energies)[window], 2)
    return float((-c1 / (2 * c2) - 1.0) * 100)


def force_constant_ratio(calc, atoms) -> float:
    """k(0.01 Å) / k(0.03 Å) of atom 0 displaced along x in the supercell (1 when harmonic)."""
    k = []
    for d in (0.01, 0.03):
        probe = atoms.copy()
        probe.positions[0, 0] += d
        probe.calc = calc
        k.append(-probe.get_forces()[0, 0] / d)
    return float(k[0] / k[1])


def main() -> None:
    """Measure every labeller on every metal and print one line each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Cu and Os only")
    parser.add_argument("--labellers", default="chgnet,sevennet,classical")
    parser.add_argument("--elements", default="Cu,Os,Ti,Au")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from sweep.data.generate.structures import perfect_supercell, unit_cell, vacancy_supercell

    elements = ["Cu", "Os"] if args.quick else args.elements.split(",")
    factories = calculators()
    print(f"{'labeller':<10} {'metal':<5} {'s/call':>7} {'atoms':>5} {'a − a_PBE':>10} {'k(.01)/k(.03)':>13}")
    summary: dict[str, list[float]] = {}
    for name in args.labellers.split(","):
        for symbol in elements:
            calc = factories[name](symbol)
            vacancy, _ = vacancy_supercell(symbol, np.random.default_rng(0))
            seconds = cost(calc, vacancy)
            deviation = lattice_deviation(calc, unit_cell(symbol))
            ratio = force_constant_ratio(calc, perfect_supercell(symbol))
            summary.setdefault(name, []).append(seconds)
            print(f"{name:<10} {symbol:<5} {seconds:7.3f} {len(vacancy):5d} {deviation:+9.2f}% {ratio:13.3f}",
                  flush=True)
    if "chgnet" in summary and "sevennet" in summary:
        ratio = statistics.median(summary["sevennet"]) / statistics.median(summary["chgnet"])
        print(f"cost ratio sevennet / chgnet: {ratio:.1f}")


if __name__ == "__main__":
    main()
