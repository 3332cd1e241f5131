"""The Parquet frame store: ingest an archive once, then stream frames as ASE ``Atoms``.

Layout (hive-partitioned, one file per trajectory)::

    STORE/_manifest.json
    STORE/element=Cu/temperature=cold/part-<sha256 prefix>.parquet

The manifest is the commit point: a Parquet file is visible only once the manifest
names it, and the manifest is replaced atomically. A killed ingest therefore leaves
the previous store exactly as it was. Part files are named by their content hash, so
re-ingesting the same archive rewrites nothing and leaves the store byte-identical.
The store may be a local path or any URI that ``pyarrow.fs.FileSystem.from_uri`` takes.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
import time
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from ase import Atoms
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from sweep.data.archive import SPLITS, iter_trajectory, scan_archive
from sweep.data.frames import make_frame
from sweep.data.schema import ARROW_SCHEMA, SCHEMA_VERSION, FrameRow, rows_to_table
from sweep.elements import ELEMENTS, TEMPERATURES, get_element
from sweep.errors import InputError

MANIFEST = "_manifest.json"
#: A part file's only possible name, relative to the store root: the manifest is data, not a path to trust.
_PART_FILE = re.compile(r"^element=(?P<element>[A-Z][a-z]?)/temperature=(?P<temperature>[a-z]+)/"
                        r"part-(?P<digest>[0-9a-f]{16})\.parquet$")
#: Temporary files of killed writers older than this are removed by the next ingest.
STALE_TEMPORARY_S = 3600.0


class PartitionEntry(BaseModel):
    """One trajectory (element × temperature) in the store."""

    model_config = ConfigDict(extra="forbid")

    element: str
    temperature: str
    temperature_K: float
    file: str
    sha256: str
    n_train: int
    n_test: int
    sources: list[str]
    labels: dict

    @model_validator(mode="after")
    def _file_is_a_part_of_this_trajectory(self) -> "PartitionEntry":
        match = _PART_FILE.match(self.file)
        if (match is None or match["element"] != self.element or match["temperature"] != self.temperature
                or not self.sha256.startswith(match["digest"])):
            raise ValueError(f"file {self.file!r} is not element={self.element}/temperature={self.temperature}/"
                             "part-<sha256 prefix>.parquet")
        return self


class StoreManifest(BaseModel):
    """The store's table of contents; its ``schema_version`` must match the code's."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int
    partitions: dict[str, PartitionEntry] = {}


def _filesystem(uri: str | Path) -> tuple[pafs.FileSystem, str]:
    text = str(uri)
    if "://" in text:
        try:
            return pafs.FileSystem.from_uri(text)
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(text, "store", f"unusable store URI ({exc})") from None
    return pafs.LocalFileSystem(), str(Path(text).absolute())


def _key(element: str, temperature: str) -> str:
    return f"{element}/{temperature}"


class FrameStore:
    """A frame store at ``uri``: read frames by element, temperature and archive split."""

    def __init__(self, uri: str | Path, manifest: StoreManifest, fs: pafs.FileSystem, root: str):
        self.uri = str(uri)
        self.manifest = manifest
        self._fs = fs
        self._root = root

    @classmethod
    def open(cls, uri: str | Path) -> "FrameStore":
        """Open an existing store; a missing or foreign store is an :class:`InputError`."""
        fs, root = _filesystem(uri)
        path = posixpath.join(root, MANIFEST)
        try:
            with fs.open_input_stream(path) as fh:
                raw = fh.read()
        except (FileNotFoundError, OSError):
            raise InputError(uri, MANIFEST, "not a tm23-sweep store (run `tm23-sweep data ingest` first)") from None
        try:
            version = json.loads(raw).get("schema_version")
        except (ValueError, AttributeError):
            raise InputError(path, MANIFEST, "unreadable (truncated or not JSON); restore it or ingest into a "
                                             "new store") from None
        if version != SCHEMA_VERSION:
            raise InputError(path, "schema_version", f"store has schema {version}, this code reads {SCHEMA_VERSION}; "
                                                     "ingest into a new store (this one is left as it is)")
        try:
            manifest = StoreManifest.model_validate_json(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or MANIFEST
            raise InputError(path, where, f"invalid manifest ({err['msg']})") from None
        return cls(uri, manifest, fs, root)

    # -- what is there -------------------------------------------------------------
    def elements(self) -> list[str]:
        """Elements present, in table order."""
        present = {p.element for p in self.manifest.partitions.values()}
        return [s for s in ELEMENTS if s in present]

    def temperatures(self, element: str) -> list[str]:
        """Temperatures present for ``element``, in cold/warm/melt order."""
        return [t for t in TEMPERATURES if _key(element, t) in self.manifest.partitions]

    def partition(self, element: str, temperature: str) -> PartitionEntry:
        """The manifest entry of one trajectory; missing is an :class:`InputError`."""
        try:
            return self.manifest.partitions[_key(element, temperature)]
        except KeyError:
            if element not in self.elements():
                raise InputError(self.uri, "element",
                                 f"{element} is not in the store (present: {', '.join(self.elements()) or 'none'})") from None
            raise InputError(self.uri, "temperature", f"{element} has no {temperature} frames in the store") from None

    def summary(self) -> list[dict]:
        """One row per trajectory: element, temperature, T, train and test counts."""
        rows = []
        for element in self.elements():
            for t in self.temperatures(element):
                p = self.partition(element, t)
                rows.append({"element": element, "temperature": t, "temperature_K": p.temperature_K,
                             "train": p.n_train, "test": p.n_test})
        return rows

    # -- reading -------------------------------------------------------------------
    def read_table(self, element: str, temperatures: str | Sequence[str] | None = None,
                   split: str | None = None) -> pa.Table:
        """Frames of ``element`` as an Arrow table, ordered by temperature then frame index."""
        if temperatures is None:
            temperatures = self.temperatures(element) or TEMPERATURES
        elif isinstance(temperatures, str):
            temperatures = [temperatures]
        tables = []
        for t in temperatures:
            entry = self.partition(element, t)
            table = pq.read_table(posixpath.join(self._root, entry.file), filesystem=self._fs, schema=ARROW_SCHEMA)
            if split is not None:
                if split not in SPLITS:
                    raise InputError(self.uri, "split", f"unknown split {split!r}; expected train or test")
                table = table.filter(pc.equal(table["split"], split))
            tables.append(table.sort_by("frame_index"))
        return pa.concat_tables(tables) if tables else ARROW_SCHEMA.empty_table()

    def frames(self, element: str, temperatures: str | Sequence[str] | None = None,
               split: str | None = None) -> list[Atoms]:
        """Frames of ``element`` as labelled ASE ``Atoms`` (see :mod:`sweep.data.frames`)."""
        return frames_from_table(self.read_table(element, temperatures, split))

    def iter_batches(self, element: str, temperatures: str | Sequence[str] | None = None,
                     split: str | None = None, batch_size: int = 256) -> Iterator[list[Atoms]]:
        """Stream frames in batches of ``batch_size`` without materialising all of them as Atoms."""
        table = self.read_table(element, temperatures, split)
        for start in range(0, table.num_rows, batch_size):
            yield frames_from_table(table.slice(start, batch_size))


def _flat(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    arr = column.combine_chunks()
    if isinstance(arr, pa.FixedSizeListArray):
        width = arr.type.list_size
        return arr.flatten().to_numpy(zero_copy_only=False), np.arange(len(arr) + 1) * width
    return arr.flatten().to_numpy(zero_copy_only=False), arr.offsets.to_numpy()


def frames_from_table(table: pa.Table) -> list[Atoms]:
    """Rebuild labelled frames from store rows (vectorised over columns)."""
    if table.num_rows == 0:
        return []
    numbers, n_off = _flat(table["numbers"])
    positions, p_off = _flat(table["positions"])
    forces, f_off = _flat(table["forces"])
    cells = _flat(table["cell"])[0].reshape(-1, 3, 3)
    pbcs = _flat(table["pbc"])[0].reshape(-1, 3)
    stresses = _flat(table["stress"])[0].reshape(-1, 6)
    energy = table["energy"].to_numpy()
    scalars = {name: table[name].to_pylist() for name in
               ("element", "temperature", "temperature_K", "split", "frame_index", "source_file", "source_frame")}
    frames = []
    for i in range(table.num_rows):
        info = {name: values[i] for name, values in scalars.items()}
        frames.append(make_frame(numbers[n_off[i]:n_off[i + 1]], positions[p_off[i]:p_off[i + 1]], cells[i], pbcs[i],
                                 energy[i], forces[f_off[i]:f_off[i + 1]], stresses[i], info=info))
    return frames


# -- ingest ----------------------------------------------------------------------------
#: Atoms closer than this (Å) overlap: no metal frame has them (nearest neighbours sit at 2.2–3.2 Å).
MIN_DISTANCE = 0.5


def _check_no_overlap(atoms: Atoms, path: Path, frame: int) -> None:
    from ase.neighborlist import neighbor_list

    i, j, d = neighbor_list("ijd", atoms, MIN_DISTANCE, self_interaction=False)
    if len(d):
        k = int(np.argmin(d))
        raise InputError(path, "positions", f"atoms {int(i[k])} and {int(j[k])} are {float(d[k]):.2f} Å apart "
                                            f"(overlapping; closer than {MIN_DISTANCE} Å)", frame=frame)


def _rows(element: str, temperature: str, split: str, path: Path, frames, start: int) -> list[FrameRow]:
    t_K = get_element(element).temperature(temperature)
    rows = []
    for k, f in enumerate(frames):
        atoms = f.atoms
        _check_no_overlap(atoms, path, f.source_frame)
        try:
            rows.append(FrameRow(
                element=element, temperature=temperature, temperature_K=t_K, split=split,
                frame_index=start + k, n_atoms=len(atoms), cell=atoms.cell.array.ravel().tolist(),
                pbc=[bool(b) for b in atoms.pbc], numbers=atoms.numbers.tolist(),
                positions=atoms.positions.ravel().tolist(), forces=f.forces.ravel().tolist(),
                energy=f.energy, stress=f.stress.tolist(), source_file=path.name, source_frame=f.source_frame,
            ))
        except ValidationError as exc:
            err = exc.errors()[0]
            raise InputError(path, ".".join(map(str, err["loc"])) or "frame", err["msg"], frame=f.source_frame) from None
    return rows


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    # Fixed writer settings keep the bytes, and so the content hash, reproducible.
    pq.write_table(table, sink, compression="zstd", write_statistics=True, store_schema=True)
    return sink.getvalue().to_pybytes()


def _write_atomically(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    if isinstance(fs, pafs.LocalFileSystem):  # flushed to disk before it is renamed into place
        from sweep.io import atomic_write_bytes

        atomic_write_bytes(path, data)
        return
    tmp = f"{path}.tmp-{hashlib.sha256(data).hexdigest()[:8]}"
    try:
        with fs.open_output_stream(tmp) as out:
            out.write(data)
        fs.move(tmp, path)
    except BaseException:
        try:
            fs.delete_file(tmp)
        except OSError:
            pass
        raise


def _remove_stale_temporaries(fs: pafs.FileSystem, root: str) -> None:
    """Delete temporary files that killed writers left in the store (older than an hour)."""
    cutoff = time.time() - STALE_TEMPORARY_S
    for info in fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True)):
        name = posixpath.basename(info.path)
        is_temporary = ".tmp-" in name or (name.startswith(".") and name.endswith(".tmp"))
        if info.type == pafs.FileType.File and is_temporary and info.mtime is not None \
                and info.mtime.timestamp() < cutoff:
            fs.delete_file(info.path)


def _existing_manifest(fs: pafs.FileSystem, root: str, store_uri: str | Path) -> StoreManifest:
    """The store's manifest; a new store only where the folder is empty: never overwrite what is there."""
    info = fs.get_file_info(posixpath.join(root, MANIFEST))
    if info.type != pafs.FileType.NotFound:
        return FrameStore.open(store_uri).manifest  # unreadable or another schema: its one-line error
    if fs.get_file_info(root).type == pafs.FileType.File:
        raise InputError(store_uri, "store", "is a file, not a folder")
    present = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    if present:
        raise InputError(store_uri, "store", f"the folder holds {len(present)} entries but no {MANIFEST}: not a "
                                             "tm23-sweep store; give an empty or new folder")
    return StoreManifest(schema_version=SCHEMA_VERSION)


def ingest_archive(archive: str | Path, store_uri: str | Path, elements: Iterable[str] | None = None,
                   progress: bool = True) -> FrameStore:
    """Validate every file of ``archive`` and add its trajectories to the store at ``store_uri``.

    All files are checked before the manifest changes; the first bad frame raises an
    :class:`InputError` and leaves the store as it was. Returns the opened store.
    """
    from rich.progress import Progress

    contents = scan_archive(archive)
    wanted = list(elements) if elements is not None else contents.elements
    for element in wanted:
        get_element(element)
        if element not in contents.elements:
            raise InputError(contents.root, "element", f"{element} has no files in the archive")
    fs, root = _filesystem(store_uri)
    manifest = _existing_manifest(fs, root, store_uri)
    created: list[str] = []  # folders this ingest made, removed again if it fails

    def make_dir(path: str) -> None:
        missing = []
        while fs.get_file_info(path).type == pafs.FileType.NotFound:
            missing.append(path)
            path = posixpath.dirname(path)
        fs.create_dir(missing[0] if missing else path, recursive=True)
        created.extend(reversed(missing))

    make_dir(root)
    _remove_stale_temporaries(fs, root)

    jobs = [(el, t) for el in wanted for t in contents.temperatures(el)]
    staged: dict[str, PartitionEntry] = {}
    written: list[str] = []
    try:
        with Progress(disable=not progress, transient=True) as bar:
            task = bar.add_task("ingest", total=len(jobs))
            for element, temperature in jobs:
                bar.update(task, description=f"ingest {element} {temperature}")
                rows, sources, counts, labels = [], [], {}, None
                for split, path, frames, convention in iter_trajectory(contents, element, temperature):
                    rows += _rows(element, temperature, split, path, frames, start=len(rows))
                    sources.append(path.name)
                    counts[split] = len(frames)
                    labels = convention.as_dict()
                data = _parquet_bytes(rows_to_table(rows))
                digest = hashlib.sha256(data).hexdigest()
                rel = f"element={element}/temperature={temperature}/part-{digest[:16]}.parquet"
                target = posixpath.join(root, rel)
                if fs.get_file_info(target).type == pafs.FileType.NotFound:
                    make_dir(posixpath.dirname(target))
                    _write_atomically(fs, target, data)
                    written.append(target)
                staged[_key(element, temperature)] = PartitionEntry(
                    element=element, temperature=temperature, temperature_K=rows[0].temperature_K, file=rel,
                    sha256=digest, n_train=counts["train"], n_test=counts["test"], sources=sources, labels=labels)
                bar.advance(task)
        old_files = {p.file for p in manifest.partitions.values()}
        manifest.partitions.update(staged)
        manifest.partitions = dict(sorted(manifest.partitions.items(),
                                          key=lambda kv: (list(ELEMENTS).index(kv[1].element),
                                                          TEMPERATURES.index(kv[1].temperature))))
        text = json.dumps(manifest.model_dump(), indent=2) + "\n"
        _write_atomically(fs, posixpath.join(root, MANIFEST), text.encode())  # the commit point
    except BaseException:
        for path in written:  # never referenced by a manifest: safe to drop
            fs.delete_file(path)
        for folder in reversed(created):  # deepest first; only the folders this ingest made
            if not fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True)):
                fs.delete_dir(folder)
        raise
    live = {p.file for p in manifest.partitions.values()}
    for stale in old_files - live:
        fs.delete_file(posixpath.join(root, stale))
    return FrameStore.open(store_uri)
