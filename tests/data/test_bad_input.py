"""Every data command answers bad input with one line naming file, frame and field, exit 2, nothing written."""

from __future__ import annotations

import shutil

import pytest

from sweep.cli import main
from tests.conftest import write_emt_archive

GOOD = "Cu_cold_nequip_train.xyz"


def _frame_lines(path):
    lines = path.read_text().splitlines()
    n = int(lines[0])
    return lines, n


def _break(collection, how):
    """Damage one file of a good archive; return (file name, expected text in the error)."""
    path = collection / GOOD
    lines, n = _frame_lines(path)
    if how == "missing-file":
        path.unlink()
        return GOOD, "path: missing: test exists for Cu cold but train does not"
    if how == "missing-partner":
        (collection / "Cu_cold_nequip_test.xyz").unlink()
        return "Cu_cold_nequip_test.xyz", "path: missing"
    if how == "not-extxyz":
        path.write_text("this is not\nan extxyz file\n")
        return GOOD, "format: not valid extxyz"
    if how == "empty":
        path.write_text("")
        return GOOD, "frames: empty file"
    if how == "no-forces":
        lines[1] = lines[1].replace(":forces:R:3", "")
        lines[2:2 + n] = [" ".join(l.split()[:4]) for l in lines[2:2 + n]]
        path.write_text("\n".join(lines) + "\n")
        return GOOD, "frame 0: forces: missing"
    if how == "no-energy":
        lines[1] = " ".join(t for t in lines[1].split() if not t.startswith(("energy=", "free_energy=")))
        path.write_text("\n".join(lines) + "\n")
        return GOOD, "frame 0: energy: missing"
    if how == "nan-force":
        parts = lines[4].split()
        parts[-1] = "nan"
        lines[4] = " ".join(parts)
        path.write_text("\n".join(lines) + "\n")
        return GOOD, "frame 0: forces: non-finite"
    if how == "inf-energy":
        lines[1] = " ".join("energy=inf" if t.startswith("energy=") else t for t in lines[1].split()
                            if not t.startswith("free_energy="))
        path.write_text("\n".join(lines) + "\n")
        return GOOD, "frame 0: energy: non-finite"
    if how == "wrong-shape":
        lines[1] = lines[1].replace("forces:R:3", "forces:R:2")
        lines[2:2 + n] = [" ".join(l.split()[:-1]) for l in lines[2:2 + n]]
        path.write_text("\n".join(lines) + "\n")
        return GOOD, "frame 0: forces: shape"
    if how == "mixed-elements":
        lines[2] = lines[2].replace("Cu", "Ni", 1)
        path.write_text("\n".join(lines) + "\n")
        return GOOD, "frame 0: species: expected only Cu (from the file name), found Ni"
    if how == "unknown-element":
        shutil.copy(path, collection / "Xx_cold_nequip_train.xyz")
        return "Xx_cold_nequip_train.xyz", "element: 'Xx' is not a TM23 metal"
    if how == "stress-size":
        import re
        lines[1] = re.sub(r'stress="[^"]*"', 'stress="0.01 0.02 0.03 0.0"', lines[1])
        path.write_text("\n".join(lines) + "\n")
        return GOOD, "frame 0: stress_voigt: expected 6 or 9 stress components, got 4"
    if how == "stress-units":
        import re
        lines[1] = re.sub(r'stress="[^"]*"', 'stress="15.0 0 0 0 15.0 0 0 0 15.0"', lines[1])
        path.write_text("\n".join(lines) + "\n")
        return GOOD, "frame 0: stress: |σ| = 15 is implausible in eV/Å³"
    if how == "energy-units":
        lines[1] = " ".join("energy=-110000.0" if t.startswith("energy=") else t for t in lines[1].split()
                            if not t.startswith("free_energy="))
        path.write_text("\n".join(lines) + "\n")
        return GOOD, "looks like meV"
    raise AssertionError(how)


CASES = ["missing-file", "missing-partner", "not-extxyz", "empty", "no-forces", "no-energy", "nan-force",
         "inf-energy", "wrong-shape", "mixed-elements", "unknown-element", "stress-size", "stress-units",
         "energy-units"]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return write_emt_archive(tmp_path_factory.mktemp("pristine"), elements=("Cu",), frames_per_temperature=10)


@pytest.mark.parametrize("how", CASES)
def test_ingest_refuses_bad_archive(how, pristine, tmp_path, capsys):
    collection = tmp_path / "archive"
    shutil.copytree(pristine, collection)
    name, expected = _break(collection, how)
    store = tmp_path / "store"
    code = main(["data", "ingest", str(collection), "--store", str(store)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0, err
    assert err.startswith("error: ") and name in err and expected in err, err
    assert not store.exists() or not any(store.rglob("*.parquet")) and not (store / "_manifest.json").exists()


def test_failed_reingest_keeps_the_old_store(pristine, tmp_path, capsys):
    collection = tmp_path / "archive"
    shutil.copytree(pristine, collection)
    store = tmp_path / "store"
    assert main(["data", "ingest", str(collection), "--store", str(store)]) == 0
    before = {p: p.read_bytes() for p in store.rglob("*") if p.is_file()}
    _break(collection, "nan-force")
    (collection / "Cu_melt_nequip_test.xyz").write_text((collection / "Cu_melt_nequip_test.xyz").read_text())
    assert main(["data", "ingest", str(collection), "--store", str(store)]) == 2
    after = {p: p.read_bytes() for p in store.rglob("*") if p.is_file()}
    assert before == after


def test_info_and_ingest_on_missing_paths(tmp_path, capsys):
    assert main(["data", "info", str(tmp_path / "nowhere")]) == 2
    assert "nowhere: path: no such file or directory" in capsys.readouterr().err
    (tmp_path / "notastore").mkdir()
    assert main(["data", "ingest", str(tmp_path / "notastore"), "--store", str(tmp_path / "s")]) == 2
    assert "files: no TM23 files" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_generate_refuses_unknown_element(tmp_path, capsys):
    assert main(["data", "generate", "--out", str(tmp_path / "g"), "--elements", "Cu,Xx"]) == 2
    assert "--elements: elements: 'Xx' is not a TM23 metal" in capsys.readouterr().err
    assert not (tmp_path / "g").exists()


def test_six_component_stress_is_read_as_voigt(pristine, tmp_path):
    import re

    from sweep.data import ingest_archive
    from sweep.data.archive import read_extxyz

    collection = tmp_path / "archive"
    shutil.copytree(pristine, collection)
    path = collection / GOOD
    reference = [f.get_stress() for f in read_extxyz(path)]
    lines = path.read_text().splitlines()
    n, k = int(lines[0]), 0
    for i in range(1, len(lines), n + 2):  # every frame's comment line
        voigt = " ".join(repr(float(v)) for v in reference[k])
        lines[i] = re.sub(r'stress="[^"]*"', f'stress="{voigt}"', lines[i])
        k += 1
    path.write_text("\n".join(lines) + "\n")
    store = ingest_archive(collection, tmp_path / "s", progress=False)
    got = [f.get_stress().tolist() for f in store.frames("Cu", "cold", "train")]
    assert got == [r.tolist() for r in reference]
    assert store.partition("Cu", "cold").labels["stress_components"] == 9  # the test file kept 9


def test_mixed_label_conventions_in_one_file_are_refused(pristine, tmp_path, capsys):
    import re

    collection = tmp_path / "archive"
    shutil.copytree(pristine, collection)
    path = collection / GOOD
    lines = path.read_text().splitlines()
    lines[1] = re.sub(r'stress="([^"]*)"', lambda m: 'stress="' + " ".join(m[1].split()[:6]) + '"', lines[1])
    path.write_text("\n".join(lines) + "\n")
    assert main(["data", "ingest", str(collection), "--store", str(tmp_path / "s")]) == 2
    assert "frame 1: labels: frame uses keys energy/forces/stress" in capsys.readouterr().err
