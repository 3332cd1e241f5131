"""The store trusts nothing in its manifest: paths, schema, truncation; and never overwrites what it does not own."""

from __future__ import annotations

import json
import os
import time

import pytest

from sweep.data.store import MANIFEST, FrameStore, ingest_archive
from sweep.errors import InputError
from tests.conftest import write_emt_archive


@pytest.fixture
def store(tmp_path):
    collection = write_emt_archive(tmp_path / "archive", elements=("Cu",), frames_per_temperature=10)
    ingest_archive(collection, tmp_path / "store", progress=False)
    return tmp_path / "store", collection


def _edit_manifest(store, change) -> None:
    path = store / MANIFEST
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def test_a_manifest_path_outside_the_store_is_refused_and_nothing_is_deleted(store, tmp_path):
    root, collection = store
    victim = tmp_path / "victim.txt"
    victim.write_text("the user's file")
    _edit_manifest(root, lambda m: m["partitions"]["Cu/cold"].update(file="../victim.txt"))
    with pytest.raises(InputError, match=r"_manifest.json: partitions.Cu/cold: invalid manifest .*not element=Cu"):
        FrameStore.open(root)
    with pytest.raises(InputError):
        ingest_archive(collection, root, progress=False)  # the ingest that would delete "stale" files
    assert victim.read_text() == "the user's file"


def test_a_store_of_a_newer_schema_is_left_as_it_is(store):
    root, collection = store
    _edit_manifest(root, lambda m: m.update(schema_version=m["schema_version"] + 1))
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    with pytest.raises(InputError, match="schema_version: store has schema .* this code reads"):
        ingest_archive(collection, root, progress=False)
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before


def test_a_truncated_manifest_is_one_line_not_a_traceback(store):
    root, collection = store
    text = (root / MANIFEST).read_text()
    (root / MANIFEST).write_text(text[: len(text) // 3])
    for call in (lambda: FrameStore.open(root), lambda: ingest_archive(collection, root, progress=False)):
        with pytest.raises(InputError, match="_manifest.json: _manifest.json: unreadable"):
            call()
    (root / MANIFEST).write_text("")
    with pytest.raises(InputError, match="unreadable"):
        FrameStore.open(root)


def test_ingest_into_a_folder_of_other_files_is_refused(tmp_path):
    collection = write_emt_archive(tmp_path / "archive", elements=("Cu",), frames_per_temperature=10)
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="no _manifest.json: not a tm23-sweep store"):
        ingest_archive(collection, folder, progress=False)
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]


def test_temporaries_of_killed_writers_are_cleaned_up(store):
    root, collection = store
    part = next(root.glob("element=Cu/temperature=cold/*.parquet"))
    stale = part.with_name(f".{part.name}.123.tmp")
    fresh = part.with_name(part.name + ".tmp-abcdef12")
    for path in (stale, fresh):
        path.write_bytes(b"half")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    ingest_archive(collection, root, progress=False)
    assert not stale.exists() and fresh.exists()  # a writer of the last hour may still be at work
