"""A corpus of malformed inputs: archive files, search-space YAML and CLI arguments.

Every case runs the real ``tm23-sweep`` entry point (:func:`sweep.cli.main`) in this
process on a small workspace (an EMT Cu archive, a store ingested from it, a runs folder)
and is judged by :func:`judge`: exit status non-zero, one line ``error: <file>: ...`` on
stderr naming the file and the field, and the store, the runs folder and the output
folder byte-identical to before. ``tests/faults/test_bad_inputs.py`` runs each case;
``benchmarks/faults.py`` imports the same corpus and prints the tally.
"""

from __future__ import annotations

import contextlib
import io
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tests.conftest import write_emt_archive
from tests.data.test_bad_input import CASES as ARCHIVE_CASES_FROM_DATA_TESTS
from tests.data.test_bad_input import GOOD, _break

#: The file the archive cases damage (a per-temperature training file of the Cu archive).
TARGET = GOOD


@dataclass
class Workspace:
    """A pristine archive, a store ingested from it, a runs folder and an output folder."""

    root: Path
    pristine: Path
    store: Path
    runs: Path
    out: Path

    def watched(self) -> list[Path]:
        """The folders a refused input must leave byte-identical."""
        return [self.store, self.runs, self.out]


@dataclass(frozen=True)
class BadInput:
    """One malformed input: ``make(case_dir, ws)`` damages or writes files and returns (argv, expected)."""

    kind: str  # "archive", "space" or "cli"
    name: str
    make: Callable[[Path, Workspace], tuple[list[str], list[str]]]


@dataclass
class Outcome:
    """What the CLI did with one bad input."""

    case: BadInput
    code: int
    stderr: str
    changed: list[str]
    problems: list[str]

    @property
    def clear(self) -> bool:
        """Non-zero exit, one clear line naming file and field, nothing changed."""
        return not self.problems


def make_workspace(root: Path) -> Workspace:
    """Build the shared workspace under ``root`` (about 2 s)."""
    from sweep.data import ingest_archive

    root = Path(root)
    pristine = write_emt_archive(root / "pristine", elements=("Cu",), frames_per_temperature=10)
    store = root / "store"
    ingest_archive(pristine, store, progress=False)
    runs = root / "runs"
    (runs / "old").mkdir(parents=True)
    (runs / "old" / "sweep.json").write_text('{"name": "old"}\n')  # something a refusal must not touch
    out = root / "out"
    out.mkdir()
    (out / "keep.txt").write_text("previous output\n")
    return Workspace(root, pristine, store, runs, out)


def snapshot(folders: list[Path]) -> dict[str, bytes | None]:
    """Every file (and folder) under ``folders``, with its bytes."""
    state: dict[str, bytes | None] = {}
    for folder in folders:
        state[str(folder)] = None if folder.exists() else b"<absent>"
        for path in sorted(folder.rglob("*")) if folder.exists() else []:
            state[str(path)] = path.read_bytes() if path.is_file() else None
    return state


def run_cli(argv: list[str]) -> tuple[int, str]:
    """``tm23-sweep ARGV`` in this process; returns (exit status, stderr)."""
    from sweep.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    return code, err.getvalue()


def judge(case: BadInput, ws: Workspace, case_dir: Path) -> Outcome:
    """Run one case and check the contract."""
    case_dir.mkdir(parents=True, exist_ok=True)
    argv, expected = case.make(case_dir, ws)
    before = snapshot(ws.watched())
    code, err = run_cli(argv)
    after = snapshot(ws.watched())
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k, b"<new>") != after.get(k, b"<gone>"))
    problems = []
    text = err.strip()
    if code == 0:
        problems.append("exit status 0")
    if "\n" in text:
        problems.append(f"{text.count(chr(10)) + 1} lines on stderr")
    if not text.startswith("error: "):
        problems.append("no 'error: ' line")
    # "<file>: [frame N: ]<field>: <reason>": at least a file, a field and a reason
    elif len(text.removeprefix("error: ").split(": ")) < 3:
        problems.append("no file and field")
    for word in expected:
        if word not in text:
            problems.append(f"{word!r} not in the message")
    if changed:
        problems.append(f"changed: {', '.join(changed[:3])}")
    return Outcome(case, code, text, changed, problems)


# -- archive files ------------------------------------------------------------------------
def _archive_case(how: str) -> Callable:
    def make(case_dir: Path, ws: Workspace):
        collection = _copy(ws, case_dir)
        name, expected = _break(collection, how)
        return _ingest(collection, ws), [name, expected]
    return make


def _copy(ws: Workspace, case_dir: Path) -> Path:
    collection = case_dir / "archive"
    shutil.copytree(ws.pristine, collection)
    return collection


def _ingest(collection: Path, ws: Workspace) -> list[str]:
    # into the existing store: a refused ingest must leave it as it was
    return ["data", "ingest", str(collection), "--store", str(ws.store)]


def _edit(transform: Callable[[list[str]], list[str]], expected: list[str]) -> Callable:
    """A case that rewrites the target file's lines with ``transform``."""
    def make(case_dir: Path, ws: Workspace):
        collection = _copy(ws, case_dir)
        path = collection / TARGET
        path.write_text("\n".join(transform(path.read_text().splitlines())) + "\n")
        return _ingest(collection, ws), [TARGET, *expected]
    return make


def _raw(data: bytes, expected: list[str]) -> Callable:
    def make(case_dir: Path, ws: Workspace):
        collection = _copy(ws, case_dir)
        (collection / TARGET).write_bytes(data)
        return _ingest(collection, ws), [TARGET, *expected]
    return make


def truncated_at(fraction: float) -> Callable:
    """Cut the target file inside a frame, before that frame's last atom line (never a valid file)."""
    def make(case_dir: Path, ws: Workspace):
        collection = _copy(ws, case_dir)
        path = collection / TARGET
        data = path.read_bytes()
        path.write_bytes(data[:truncation_offset(data, fraction)])
        return _ingest(collection, ws), [TARGET]
    return make


def truncation_offset(data: bytes, fraction: float) -> int:
    """A byte offset near ``fraction`` of ``data`` inside a frame, before its last atom line (never on a frame boundary)."""
    lines = data.splitlines(keepends=True)
    n = int(lines[0])
    frame_len = n + 2
    starts, pos = [], 0
    for line in lines:
        starts.append(pos)
        pos += len(line)
    n_frames = len(lines) // frame_len
    frame = min(n_frames - 1, int(fraction * n_frames))
    # the atom count, comment or an atom line other than the last one
    within = min(n, int(fraction * 997) % n)  # 0..n-1 lines after the frame's start
    line_index = frame * frame_len + within
    line = lines[line_index]
    cut = starts[line_index] + max(1, min(len(line) - 2, int(fraction * 7919) % max(1, len(line) - 1)))
    return cut


def _set_comment(key: str, value: str) -> Callable[[list[str]], list[str]]:
    def transform(lines):
        tokens = re.split(r" (?=(?:[^\"]*\"[^\"]*\")*[^\"]*$)", lines[1])  # split outside quotes
        tokens = [t for t in tokens if not t.startswith(f"{key}=")] + [f"{key}={value}"]
        lines[1] = " ".join(tokens)
        return lines
    return transform


def _atom_column(column: int, value: str, line: int = 2) -> Callable[[list[str]], list[str]]:
    def transform(lines):
        parts = lines[line].split()
        parts[column] = value
        lines[line] = " ".join(parts)
        return lines
    return transform


def _header(text: str) -> Callable[[list[str]], list[str]]:
    def transform(lines):
        lines[0] = text
        return lines
    return transform


def _drop_pos_column(lines):
    n = int(lines[0])
    lines[1] = lines[1].replace("pos:R:3", "pos:R:2")
    for i in range(2, 2 + n):
        parts = lines[i].split()
        lines[i] = " ".join(parts[:3] + parts[4:])
    return lines


ARCHIVE_CASES = [BadInput("archive", how, _archive_case(how)) for how in ARCHIVE_CASES_FROM_DATA_TESTS] + [
    BadInput("archive", "truncated-early", truncated_at(0.05)),
    BadInput("archive", "truncated-middle", truncated_at(0.5)),
    BadInput("archive", "truncated-late", truncated_at(0.93)),
    BadInput("archive", "header-not-a-number", _edit(_header("thirty-one"), [])),
    BadInput("archive", "header-claims-1e9-atoms", _edit(_header("1000000000"), [])),
    BadInput("archive", "header-negative", _edit(_header("-31"), [])),
    BadInput("archive", "header-zero-atoms", _edit(lambda l: ["0", l[1]], [])),
    BadInput("archive", "nan-position", _edit(_atom_column(1, "nan"), ["frame 0", "pos"])),
    BadInput("archive", "nan-energy", _edit(_set_comment("energy", "nan"), ["frame 0", "energy"])),
    BadInput("archive", "energy-not-a-number", _edit(_set_comment("energy", "high"), ["frame 0", "energy"])),
    BadInput("archive", "zero-volume-cell", _edit(_set_comment("Lattice", '"0 0 0 0 0 0 0 0 0"'), ["Lattice"])),
    BadInput("archive", "positions-2d", _edit(_drop_pos_column, [])),
    BadInput("archive", "forces-in-meV", _edit(_atom_column(-1, "250000.0"), ["frame 0", "forces"])),
    BadInput("archive", "binary-garbage", _raw(bytes(random.Random(7).randrange(256) for _ in range(4096)), [])),
]


# -- search-space YAML --------------------------------------------------------------------
def _space(text: str, expected: list[str], extra: tuple[str, ...] = ()) -> Callable:
    def make(case_dir: Path, ws: Workspace):
        path = case_dir / "bad_space.yaml"
        path.write_text(text)
        named = [] if "store" in expected else ["bad_space.yaml"]  # a missing element is the store's fault
        return ["run", str(path), "--store", str(ws.store), "--runs-dir", str(ws.runs), "--no-live", *extra], \
            [*named, *expected]
    return make


FLARE = "studies: [{model: flare, elements: [Cu]%s}]\n"
SPACE_CASES = [
    BadInput("space", "unknown-top-key", _space(FLARE % "" + "budget: 3\n", ["budget", "unknown key"])),
    BadInput("space", "unknown-study-key", _space(FLARE % ", parms: {}", ["studies[0].parms"])),
    BadInput("space", "cpus-not-integer", _space(FLARE % ", resources: {cpus: two}", ["studies[0].resources.cpus"])),
    BadInput("space", "empty-grid", _space(FLARE % ", params: {r_cut: {grid: []}}", ["studies[0].params.r_cut.grid"])),
    BadInput("space", "grid-not-a-list", _space(FLARE % ", params: {r_cut: {grid: 4.0}}", ["studies[0].params.r_cut"])),
    BadInput("space", "unknown-hyperparameter", _space(FLARE % ", params: {r_kut: 5.0}", ["studies[0].params.r_kut"])),
    BadInput("space", "hyperparameter-wrong-type", _space(FLARE % ", params: {n_max: many}", ["studies[0].params.n_max"])),
    BadInput("space", "unknown-element", _space("studies: [{model: flare, elements: [Xx]}]\n", ["studies[0].elements"])),
    BadInput("space", "unknown-model", _space("studies: [{model: schnet, elements: [Cu]}]\n", ["studies[0].model"])),
    BadInput("space", "no-studies", _space("studies: []\n", ["studies"])),
    BadInput("space", "empty-file", _space("", ["space"])),
    BadInput("space", "not-yaml", _space("studies: [\n", ["YAML"])),
    BadInput("space", "negative-gpus", _space("studies: [{model: nequip, elements: [Cu], resources: {gpus: -1}}]\n",
                                              ["studies[0].resources.gpus"])),
    BadInput("space", "gpus-for-flare", _space(FLARE % ", resources: {gpus: 1}", ["studies[0].resources.gpus"])),
    BadInput("space", "element-not-in-store", _space("studies: [{model: flare, elements: [Au]}]\n", ["store", "element", "Au"])),
]
#: Resources no node has: refused only once Ray reports its nodes (a Ray start each, ~5 s).
RESOURCE_CASES = [
    BadInput("space", "more-gpus-than-cluster", _space("studies: [{model: nequip, elements: [Cu], resources: {gpus: 4}}]\n",
                                                      ["studies[0].resources.gpus", "wait forever"],
                                                      ("--num-cpus", "1"))),
    BadInput("space", "more-cpus-than-node", _space(FLARE % ", resources: {cpus: 64}",
                                                   ["studies[0].resources.cpus", "wait forever"], ("--num-cpus", "1"))),
]


# -- CLI arguments ------------------------------------------------------------------------
def _train(*args: str, expected: list[str], store: str | None = None) -> Callable:
    def make(case_dir: Path, ws: Workspace):
        return ["train", "flare", "--store", store or str(ws.store), "--out", str(ws.out / "t"), *args], expected
    return make


def _argv(build: Callable[[Path, Workspace], list[str]], expected: list[str]) -> Callable:
    def make(case_dir: Path, ws: Workspace):
        return build(case_dir, ws), expected
    return make


CLI_CASES = [
    BadInput("cli", "train-unknown-element", _train("--element", "Xx", expected=["--element", "element", "Xx"])),
    BadInput("cli", "train-bad-task", _train("--element", "Cu", "--task", "everything", expected=["--task"])),
    BadInput("cli", "train-set-without-equals", _train("--element", "Cu", "--set", "r_cut", expected=["--set", "r_cut"])),
    BadInput("cli", "train-set-unknown-key", _train("--element", "Cu", "--set", "r_kut=5", expected=["--set", "r_kut"])),
    BadInput("cli", "train-set-bad-value", _train("--element", "Cu", "--set", "n_max=-3", expected=["--set", "n_max"])),
    BadInput("cli", "train-missing-store", _argv(lambda d, ws: ["train", "flare", "--store", str(d / "nostore"),
                                                                "--element", "Cu", "--out", str(ws.out / "t")],
                                                 ["nostore"])),
    BadInput("cli", "run-missing-store", _argv(lambda d, ws: ["run", "demo", "--store", str(d / "nostore"),
                                                              "--runs-dir", str(ws.runs), "--no-live"], ["nostore"])),
    BadInput("cli", "run-missing-space", _argv(lambda d, ws: ["run", str(d / "nope.yaml"), "--store", str(ws.store),
                                                              "--runs-dir", str(ws.runs), "--no-live"],
                                               ["nope.yaml", "space"])),
    BadInput("cli", "resume-unknown-sweep", _argv(lambda d, ws: ["resume", "ghost", "--runs-dir", str(ws.runs),
                                                                 "--no-live"], ["ghost", "name"])),
    BadInput("cli", "info-missing-path", _argv(lambda d, ws: ["data", "info", str(d / "nowhere")], ["nowhere", "path"])),
    BadInput("cli", "ingest-unknown-element", _argv(lambda d, ws: ["data", "ingest", str(ws.pristine), "--store",
                                                                   str(ws.store), "--elements", "Cu,Xx"],
                                                    ["--elements", "Xx"])),
    BadInput("cli", "calibrate-md-unknown-element", _argv(lambda d, ws: ["data", "calibrate-md", "--elements", "Cu,Xx"],
                                                          ["--elements", "Xx"])),
]

#: Every case that needs no Ray (the bulk of the corpus, ~0.1 s each).
CORPUS = ARCHIVE_CASES + SPACE_CASES + CLI_CASES
#: All of them, including the two that start a local Ray instance.
FULL_CORPUS = CORPUS + RESOURCE_CASES


def try_all(root: Path, cases: list[BadInput] | None = None) -> list[Outcome]:
    """Run ``cases`` (default: :data:`FULL_CORPUS`) in a fresh workspace under ``root``."""
    ws = make_workspace(Path(root) / "ws")
    return [judge(case, ws, Path(root) / "cases" / f"{i:02d}-{case.name}")
            for i, case in enumerate(cases if cases is not None else FULL_CORPUS)]
