"""The second corpus of bad inputs: spaces, stores, sweep state, the tracking server, the disk, user folders.

Each case is tried through the real ``tm23-sweep`` entry point as a user would, and judged
as the first corpus (:mod:`tests.faults.corpus`): exit status non-zero, one line
``error: <file or flag>: <field>: <reason>`` on stderr, and nothing changed in the
workspace's folders nor in the folders the case names as its own. Cases may set
environment variables and may need root (a small tmpfs for a full disk).

The signal cases (Ctrl-C, SIGTERM) and the race of two ``run`` drivers need a sweep that
runs; they live in ``tests/faults/test_signals.py`` and :func:`race_two_runs`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tests.faults.corpus import Outcome, Workspace, _edit, run_cli, snapshot

FLARE = "studies: [{model: flare, elements: [Cu]%s}]\n"


@dataclass(frozen=True)
class Case:
    """One bad input: ``make(case_dir, ws)`` returns a :class:`Setup`."""

    kind: str
    name: str
    make: Callable[[Path, Workspace], "Setup"]
    needs_root: bool = False


@dataclass
class Setup:
    """What a case runs and expects."""

    argv: list[str]
    expected: list[str]
    env: dict[str, str] = field(default_factory=dict)
    watched: list[Path] = field(default_factory=list)  # the case's own folders that must not change
    cleanup: Callable[[], None] | None = None


@contextlib.contextmanager
def _environment(env: dict[str, str]):
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def judge(case: Case, ws: Workspace, case_dir: Path) -> Outcome:
    """Run one case and check the contract (see the module docs)."""
    case_dir.mkdir(parents=True, exist_ok=True)
    setup = case.make(case_dir, ws)
    folders = ws.watched() + setup.watched
    before = snapshot(folders)
    try:
        with _environment(setup.env):
            code, err = run_cli(setup.argv)
    finally:
        if setup.cleanup is not None:
            after = snapshot(folders)
            setup.cleanup()
        else:
            after = None
    after = after if after is not None else snapshot(folders)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k, b"<new>") != after.get(k, b"<gone>"))
    text = err.strip()
    problems = []
    if code == 0:
        problems.append("exit status 0")
    if "\n" in text:
        problems.append(f"{text.count(chr(10)) + 1} lines on stderr")
    if not text.startswith("error: "):
        problems.append("no 'error: ' line")
    elif len(text.removeprefix("error: ").split(": ")) < 3:
        problems.append("no file and field")
    problems += [f"{word!r} not in the message" for word in setup.expected if word not in text]
    if changed:
        problems.append(f"changed: {', '.join(changed[:3])}")
    return Outcome(case, code, text, changed, problems)


# -- spaces -----------------------------------------------------------------------------------
def _space(text: str, expected: list[str], store: Callable[[Path, Workspace], str] | None = None,
           env: dict[str, str] | None = None) -> Callable:
    def make(case_dir: Path, ws: Workspace) -> Setup:
        path = case_dir / "space.yaml"
        path.write_text(text)
        where = store(case_dir, ws) if store else str(ws.store)
        return Setup(["run", str(path), "--store", where, "--runs-dir", str(ws.runs), "--no-live"], expected,
                     env=env or {})
    return make


DUPLICATE_PARAMS = """\
studies:
  - model: flare
    elements: [Cu]
    params: {r_cut: 4.0}
    params: {n_max: 3}
"""


# -- stores -----------------------------------------------------------------------------------
def _store_copy(change: Callable[[Path], None]) -> Callable[[Path, Workspace], str]:
    def build(case_dir: Path, ws: Workspace) -> str:
        store = case_dir / "store"
        shutil.copytree(ws.store, store)
        change(store)
        return str(store)
    return build


def _manifest(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def change(store: Path) -> None:
        manifest = json.loads((store / "_manifest.json").read_text())
        edit(manifest)
        (store / "_manifest.json").write_text(json.dumps(manifest))
    return change


def _truncate_manifest(store: Path) -> None:
    text = (store / "_manifest.json").read_text()
    (store / "_manifest.json").write_text(text[: len(text) // 2])


def _drop_melt(manifest: dict) -> None:
    manifest["partitions"] = {k: v for k, v in manifest["partitions"].items() if not k.endswith("/melt")}


# -- sweep state ------------------------------------------------------------------------------
def _sweep_folder(case_dir: Path, ws: Workspace, tracking_uri: str) -> Path:
    """A sweep folder as `run` leaves it (sweep.json, space.yaml), in a runs folder of the case's own."""
    from sweep.tune.runner import SweepInfo

    runs = case_dir / "runs"
    folder = runs / "s"
    folder.mkdir(parents=True)
    (folder / "space.yaml").write_text(FLARE % "")
    info = SweepInfo(name="s", space_source=str(folder / "space.yaml"), space_digest="0", store=str(ws.store),
                     created=time.time(), tracking_uri=tracking_uri)
    (folder / "sweep.json").write_text(info.model_dump_json())
    return folder


def _resume_with(damage: Callable[[Path], None], expected: list[str], env_uri: str | None = None) -> Callable:
    def make(case_dir: Path, ws: Workspace) -> Setup:
        folder = _sweep_folder(case_dir, ws, f"sqlite:///{case_dir / 'runs' / 'mlruns.db'}")
        damage(folder)
        env = {"MLFLOW_TRACKING_URI": env_uri} if env_uri else {}
        return Setup(["resume", "s", "--runs-dir", str(folder.parent), "--no-live"], expected, env=env,
                     watched=[folder.parent])
    return make


def _bad_ledger_record(folder: Path) -> None:
    (folder / "ledger").mkdir()
    (folder / "ledger" / "0123456789abcdef.json").write_text('{"config_hash": "0123456789abcdef", "status": ')


def _bad_trainings(folder: Path) -> None:
    (folder / "work" / "0123456789abcdef").mkdir(parents=True)
    (folder / "work" / "0123456789abcdef" / "trainings.json").write_text("{not json")


def _bad_pending(folder: Path) -> None:
    (folder / "work" / "0123456789abcdef").mkdir(parents=True)
    (folder / "work" / "0123456789abcdef" / "mlflow_pending.json").write_text('{"ops": 3}')


# -- the disk ---------------------------------------------------------------------------------
def _small_disk(case_dir: Path, size: str) -> tuple[Path, Callable[[], None]]:
    """A tmpfs of ``size`` mounted under ``case_dir`` (root only); returns it and its unmount."""
    mount = case_dir / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], check=True)
    return mount, lambda: subprocess.run(["umount", "-l", str(mount)], check=False)


def _ingest_onto_full_disk(case_dir: Path, ws: Workspace) -> Setup:
    mount, unmount = _small_disk(case_dir, "40k")
    return Setup(["data", "ingest", str(ws.pristine), "--store", str(mount / "store")], ["disk", "No space"],
                 watched=[mount], cleanup=unmount)


def _sweep_onto_full_disk(case_dir: Path, ws: Workspace) -> Setup:
    mount, unmount = _small_disk(case_dir, "4m")
    path = case_dir / "space.yaml"
    path.write_text(FLARE % "")
    return Setup(["run", str(path), "--store", str(ws.store), "--runs-dir", str(mount / "runs"), "--no-live"],
                 ["runs-dir", "MiB free"], watched=[mount], cleanup=unmount)


# -- folders the user owns --------------------------------------------------------------------
def _export_into_user_folder(case_dir: Path, ws: Workspace) -> Setup:
    return Setup(["export", "any-sweep", "--out", str(ws.out), "--runs-dir", str(ws.runs)],
                 ["--out", "not a tm23-sweep export folder"])


def _report_into_user_folder(case_dir: Path, ws: Workspace) -> Setup:
    return Setup(["report", "any-sweep", "--out", str(ws.out), "--runs-dir", str(ws.runs)],
                 ["--out", "not a tm23-sweep report folder"])


def _train_into_user_folder(case_dir: Path, ws: Workspace) -> Setup:
    return Setup(["train", "flare", "--store", str(ws.store), "--element", "Cu", "--out", str(ws.out)],
                 ["--out", "did not write"])


def _generate_over_an_archive(case_dir: Path, ws: Workspace) -> Setup:
    from sweep.data.archive import COLLECTION_DIR

    out = ws.pristine if (ws.pristine / COLLECTION_DIR).is_dir() else ws.pristine.parent
    return Setup(["data", "generate", "--out", str(out), "--elements", "Cu", "--labeller", "classical",
                  "--no-cache"], ["--out", "never replaced"], watched=[out])


def _overlap(lines: list[str]) -> list[str]:
    first = lines[2].split()
    second = lines[3].split()
    second[1:4] = first[1:4]  # atom 1 on top of atom 0
    lines[3] = " ".join(second)
    return lines


def _plain(make: Callable[[Path, Workspace], tuple[list[str], list[str]]]) -> Callable:
    def wrap(case_dir: Path, ws: Workspace) -> Setup:
        argv, expected = make(case_dir, ws)
        return Setup(argv, expected)
    return wrap


SECOND_CORPUS: list[Case] = [
    Case("space", "metric-typo", _space("metric: val_force_mae\n" + FLARE % "", ["metric", "val_forces_mae"])),
    Case("space", "duplicate-params-block", _space(DUPLICATE_PARAMS, ["space.yaml", "written twice"])),
    Case("space", "infinite-cutoff", _space("studies: [{model: nequip, elements: [Cu], params: {r_max: .inf}}]\n",
                                            ["studies[0].params.r_max", "finite"])),
    Case("store", "newer-schema", _space(FLARE % "", ["schema_version", "this code reads"],
                                         store=_store_copy(_manifest(lambda m: m.update(schema_version=99))))),
    Case("store", "truncated-manifest", _space(FLARE % "", ["_manifest.json", "unreadable"],
                                               store=_store_copy(_truncate_manifest))),
    Case("store", "temperature-missing", _space("task: transfer-melt\n" + FLARE % "", ["temperature", "melt"],
                                                store=_store_copy(_manifest(_drop_melt)))),
    Case("disk", "full-during-ingest", _ingest_onto_full_disk, needs_root=True),
    Case("disk", "full-runs-folder", _sweep_onto_full_disk, needs_root=True),
    Case("tracking", "uri-points-nowhere", _space(FLARE % "", ["MLFLOW_TRACKING_URI", "does not answer"],
                                                  env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"})),
    Case("tracking", "resume-under-another-uri", _resume_with(lambda f: None, ["differs from", "where sweep 's'"],
                                                              env_uri="sqlite:////elsewhere/mlruns.db")),
    Case("state", "resume-outside-the-root", _plain(lambda d, ws: (["resume", "../x", "--runs-dir", str(ws.runs)],
                                                                   ["unusable sweep name"]))),
    Case("state", "corrupt-ledger-record", _resume_with(_bad_ledger_record, ["ledger record", "unreadable"])),
    Case("state", "corrupt-trainings-json", _resume_with(_bad_trainings, ["trainings.json", "unreadable"])),
    Case("state", "corrupt-mlflow-pending", _resume_with(_bad_pending, ["mlflow_pending.json", "unreadable"])),
    Case("archive", "overlapping-atoms", _plain(_edit(_overlap, ["frame 0", "positions", "overlapping"]))),
    Case("folder", "export-into-user-folder", _export_into_user_folder),
    Case("folder", "report-into-user-folder", _report_into_user_folder),
    Case("folder", "generate-over-an-archive", _generate_over_an_archive),
    Case("folder", "train-into-user-folder", _train_into_user_folder),
]


def race_two_runs(root: Path, store: str) -> Outcome:
    """Two ``run`` drivers on one name: the second is refused with one line; the first's files are untouched."""
    from tests.sweeps.conftest import cli_command, cli_env

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    space = root / "race.yaml"
    space.write_text("elements: [Cu]\ntask: grid\nsearch: {algorithm: grid}\nstudies:\n  - model: flare\n"
                     "    resources: {cpus: 1}\n    params: {r_cut: {grid: [3.5, 4.0]}, n_max: 2, l_max: 1,"
                     " sparse_per_frame: 2, block_size: 6, maxiter: 10}\n")
    runs = root / "runs"
    argv = ["run", str(space), "--store", store, "--runs-dir", str(runs), "--no-live"]
    first = subprocess.Popen(cli_command(*argv), env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list((runs / "race").glob("driver.*.json")):
            assert first.poll() is None and time.monotonic() < deadline, "the first driver did not take its lease"
            time.sleep(0.05)
        owned = [runs / "race" / "sweep.json", runs / "race" / "space.yaml"]
        before = {str(p): p.read_bytes() for p in owned}
        code, err = run_cli(argv)
        after = {str(p): p.read_bytes() for p in owned}
        case = Case("race", "two-runs-one-name", lambda d, ws: Setup(argv, []))
        text = err.strip()
        problems = [] if code == 2 and text.count("\n") == 0 and "being run by another driver" in text else [
            f"exit {code}: {text[:200]}"]
        changed = sorted(k for k in before if before[k] != after[k])
        problems += [f"changed: {', '.join(changed)}"] if changed else []
        assert first.wait(timeout=300) == 0, "the first driver did not finish"
        return Outcome(case, code, text, changed, problems)
    finally:
        if first.poll() is None:
            first.kill()


def try_second(root: Path, cases: list[Case] | None = None) -> list[Outcome]:
    """Run the second corpus (root-only cases skipped when not root) in a fresh workspace under ``root``."""
    from tests.faults.corpus import make_workspace

    ws = make_workspace(Path(root) / "ws2")
    chosen = [c for c in (cases if cases is not None else SECOND_CORPUS) if not c.needs_root or os.geteuid() == 0]
    return [judge(case, ws, Path(root) / "cases2" / f"{i:02d}-{case.name}") for i, case in enumerate(chosen)]


__all__ = ["Case", "SECOND_CORPUS", "Setup", "judge", "race_two_runs", "try_second"]
