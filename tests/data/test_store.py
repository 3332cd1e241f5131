"""Archive reader, Parquet store and splits on a small EMT archive in the real layout."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from sweep.data import FrameStore, ingest_archive, parse_task, split_frames
from sweep.data.archive import read_extxyz, scan_archive
from sweep.errors import InputError


def test_scan_finds_layout(emt_archive):
    contents = scan_archive(emt_archive.parent)  # the parent of benchmarking_master_collection works too
    assert contents.elements == ["Cu", "Au"]
    assert contents.temperatures("Cu") == ["cold", "warm", "melt"]
    assert set(contents.combined) == {("Cu", "train"), ("Cu", "test"), ("Au", "train"), ("Au", "test")}


def test_ingest_round_trips_labels_exactly(emt_archive, tmp_path):
    store = ingest_archive(emt_archive, tmp_path / "store", progress=False)
    assert store.elements() == ["Cu", "Au"]
    summary = {(r["element"], r["temperature"]): (r["train"], r["test"]) for r in store.summary()}
    assert summary[("Au", "melt")] == (9, 1)
    assert len(summary) == 6

    original = read_extxyz(emt_archive / "Cu_warm_nequip_train.xyz")
    frames = store.frames("Cu", "warm", "train")
    assert len(frames) == len(original) == 9
    for a, b in zip(original, frames):
        np.testing.assert_array_equal(a.positions, b.positions)
        np.testing.assert_array_equal(a.cell.array, b.cell.array)
        assert a.get_potential_energy() == b.get_potential_energy()
        np.testing.assert_array_equal(a.get_forces(), b.get_forces())
        np.testing.assert_allclose(a.get_stress(), b.get_stress(), rtol=0, atol=0)
    assert frames[3].info["frame_index"] == 3 and frames[3].info["source_file"] == "Cu_warm_nequip_train.xyz"
    test = store.frames("Cu", "warm", "test")
    assert [f.info["frame_index"] for f in test] == [9]  # test frames follow train in the trajectory
    assert frames[0].info["temperature_K"] == pytest.approx(0.75 * 1358)


def test_reingest_is_idempotent(emt_archive, tmp_path):
    ingest_archive(emt_archive, tmp_path / "store", progress=False)
    before = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "store").rglob("*") if p.is_file()}
    ingest_archive(emt_archive, tmp_path / "store", progress=False)
    after = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "store").rglob("*") if p.is_file()}
    assert before == after
    assert len([p for p in before if p.suffix == ".parquet"]) == 6


def test_batches_stream_all_frames(emt_archive, tmp_path):
    store = ingest_archive(emt_archive, tmp_path / "store", progress=False)
    batches = list(store.iter_batches("Au", batch_size=7))
    assert [len(b) for b in batches] == [7, 7, 7, 7, 2]
    assert [f.info["temperature"] for f in batches[0]][:3] == ["cold"] * 3


def test_store_uri_form(emt_archive, tmp_path):
    ingest_archive(emt_archive, f"file://{tmp_path}/uristore", elements=["Cu"], progress=False)
    store = FrameStore.open(f"file://{tmp_path}/uristore")
    assert store.elements() == ["Cu"] and len(store.frames("Cu")) == 30


def test_missing_element_in_store(emt_archive, tmp_path):
    store = ingest_archive(emt_archive, tmp_path / "store", elements=["Cu"], progress=False)
    with pytest.raises(InputError, match="element: Ti is not in the store"):
        store.frames("Ti")


def test_splits_scale_with_the_store(emt_archive, tmp_path):
    store = ingest_archive(emt_archive, tmp_path / "store", progress=False)
    full = split_frames(store, "Cu", "full")
    # 3 × 9 train frames, 10% (3) carved out for validation; 3 × 1 test
    assert full.counts() == {"train": 24, "val": 3, "test": 3}
    assert {f.info["split"] for f in full.train + full.val} == {"train"}
    assert {f.info["split"] for f in full.test} == {"test"}

    grid = split_frames(store, "Cu", "grid")  # 200/100 of 1000-frame trajectories → 2/1 of 10
    assert len(grid.train) + len(grid.val) == 2 and len(grid.test) == 1

    warm = split_frames(store, "Cu", "transfer-warm")
    assert {f.info["temperature"] for f in warm.train + warm.val} == {"cold"}
    assert {f.info["temperature"] for f in warm.test} == {"warm"} and len(warm.test) == 10
    assert len(warm.train) + len(warm.val) == 10

    small = split_frames(store, "Cu", "learning-curve:500", seed=3)
    large = split_frames(store, "Cu", "learning-curve:900", seed=3)
    assert len(small.train) + len(small.val) == 5 and len(large.train) + len(large.val) == 9
    assert {f.info["temperature"] for f in small.train} == {"melt"}
    ids = lambda s: {f.info["frame_index"] for f in s.train + s.val}  # noqa: E731
    assert ids(small) < ids(large)  # learning-curve subsets are nested


def test_splits_match_paper_counts_on_real_sizes():
    from sweep.data.splits import GRID_TEST, GRID_TRAIN, scaled

    assert scaled(GRID_TRAIN, 1000) == 200 and scaled(GRID_TEST, 1000) == 100
    assert scaled(300, 100) == 30


def test_validation_carve_out_is_seeded(emt_archive, tmp_path):
    store = ingest_archive(emt_archive, tmp_path / "store", progress=False)
    ids = lambda s: [(f.info["temperature"], f.info["frame_index"]) for f in s.val]  # noqa: E731
    assert ids(split_frames(store, "Au", "full", seed=5)) == ids(split_frames(store, "Au", "full", seed=5))
    seeds = {tuple(ids(split_frames(store, "Au", "full", seed=s))) for s in range(5)}
    assert len(seeds) > 1


@pytest.mark.parametrize("text", ["bogus", "learning-curve", "learning-curve:0", "learning-curve:901", "full:3"])
def test_bad_task(text):
    with pytest.raises(InputError, match="task"):
        parse_task(text)


def test_cli_ingest_and_info(emt_archive, tmp_path):
    cli = [sys.executable, "-m", "sweep.cli"]
    store = tmp_path / "s"
    done = subprocess.run(cli + ["data", "ingest", str(emt_archive), "--store", str(store)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    info = subprocess.run(cli + ["data", "info", str(store)], capture_output=True, text=True)
    assert info.returncode == 0
    assert "2 elements, 6 trajectories, 60 frames" in info.stdout
    assert "Au" in info.stdout and "melt" in info.stdout
    manifest = json.loads((store / "_manifest.json").read_text())
    assert manifest["schema_version"] == 1 and len(manifest["partitions"]) == 6
    archive_info = subprocess.run(cli + ["data", "info", str(emt_archive)], capture_output=True, text=True)
    assert archive_info.returncode == 0 and "2 elements present" in archive_info.stdout
