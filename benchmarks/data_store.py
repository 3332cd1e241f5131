"""Store vs extxyz: time to get N frames as ASE Atoms, and bytes on disk, measured in one run.

    python benchmarks/data_store.py [--quick] [--elements Cu,Ti] [--frames 300]

Prints, on its last lines, two ratios: store read time / extxyz parse time, and store
size / extxyz size (both < 1 mean the store wins).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def _best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    """Generate an embedded archive, ingest it, and time both read paths."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer frames and repeats")
    parser.add_argument("--elements", default="Cu,Ti")
    parser.add_argument("--frames", type=int, default=300, help="frames per temperature")
    args = parser.parse_args()
    frames = 100 if args.quick else args.frames
    repeats = 3 if args.quick else 5
    elements = args.elements.split(",")

    from sweep.data import FrameStore, ingest_archive
    from sweep.data.archive import read_extxyz, scan_archive
    from sweep.data.generate import generate_archive
    from sweep.data.generate.cache import default_cache_root

    with tempfile.TemporaryDirectory() as tmp:
        collection = generate_archive(Path(tmp) / "archive", elements, frames_per_temperature=frames, progress=False,
                                      cache_root=default_cache_root())
        ingest_archive(collection, Path(tmp) / "store", progress=False)
        store = FrameStore.open(Path(tmp) / "store")
        contents = scan_archive(collection)
        files = list(contents.per_temperature.values())

        def from_xyz():
            return sum(len(read_extxyz(f)) for f in files)

        def from_store():
            return sum(len(store.frames(el)) for el in elements)

        n_xyz, n_store = from_xyz(), from_store()
        assert n_xyz == n_store, (n_xyz, n_store)
        t_xyz = _best_of(from_xyz, repeats)
        t_store = _best_of(from_store, repeats)
        size_xyz = sum(f.stat().st_size for f in files)
        size_store = sum(p.stat().st_size for p in (Path(tmp) / "store").rglob("*.parquet"))

    print(f"frames: {n_store} ({', '.join(elements)}, {frames} per temperature), best of {repeats}")
    print(f"extxyz parse: {t_xyz:.3f} s ({1e6 * t_xyz / n_xyz:.0f} µs/frame), {size_xyz / 1e6:.2f} MB")
    print(f"store read:   {t_store:.3f} s ({1e6 * t_store / n_store:.0f} µs/frame), {size_store / 1e6:.2f} MB")
    print(f"read time ratio store/extxyz: {t_store / t_xyz:.3f}")
    print(f"size ratio store/extxyz: {size_store / size_xyz:.3f}")


if __name__ == "__main__":
    main()
